# The daskstep image: the `daskstep` CLI (controller, log and credential sidecars), the step
# entrypoint at /daskstep/entrypoint.pyz (`daskstep entrypoint install DIR` copies it into a
# volume a step container mounts, as Tekton's init container does), and images/ for
# `daskstep images build`.
#
#   daskstep images build-daskstep --tag daskstep:dev [--base IMAGE]
#
# builds it on the environment of deps.Dockerfile (made once, then reused while daskstep's
# dependencies and the base stay the same), with the daskstep wheel as the build context's
# only wheel: a change to daskstep rebuilds in seconds, and the build needs no network.
ARG DEPS_IMAGE

FROM ${DEPS_IMAGE}
COPY wheels /tmp/wheels
RUN /opt/daskstep/bin/python -m pip install --no-cache-dir --no-index --no-deps /tmp/wheels/*.whl \
 && rm -r /tmp/wheels \
 && mkdir -p /daskstep \
 && /opt/daskstep/bin/daskstep pack-entrypoint --output /daskstep/entrypoint.pyz
COPY images /daskstep/images
ENV PATH=/opt/daskstep/bin:${PATH} DASKSTEP_IMAGES=/daskstep/images
CMD ["daskstep", "--help"]
