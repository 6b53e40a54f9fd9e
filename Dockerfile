# The daskstep image: the `daskstep` CLI (controller, log and credential sidecars), the step
# entrypoint at /daskstep/entrypoint.pyz (`daskstep entrypoint install DIR` copies it into a
# volume a step container mounts, as Tekton's init container does), and images/ for
# `daskstep images build`.
#
#   daskstep images build-daskstep --tag daskstep:dev [--base IMAGE]
#
# which puts the wheels of daskstep and its dependencies (for the base's Python) into the
# build context: the build needs no network.
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
# daskstep removes this stage once the image is built (it names its steps' images by this)
LABEL org.daskstep.stage=build
COPY wheels /tmp/wheels
RUN python3 -m venv /opt/daskstep \
 && /opt/daskstep/bin/python -m pip install --no-cache-dir --no-index --find-links /tmp/wheels "daskstep[kubernetes]" \
 && mkdir -p /daskstep \
 && /opt/daskstep/bin/daskstep pack-entrypoint --output /daskstep/entrypoint.pyz

FROM ${BASE_IMAGE}
COPY --from=build /opt/daskstep /opt/daskstep
COPY --from=build /daskstep/entrypoint.pyz /daskstep/entrypoint.pyz
COPY images /daskstep/images
ENV PATH=/opt/daskstep/bin:${PATH} DASKSTEP_IMAGES=/daskstep/images
CMD ["daskstep", "--help"]
