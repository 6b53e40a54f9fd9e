# The daskstep image's dependencies: an environment at /opt/daskstep with what daskstep needs
# (and its kubernetes extra), on which the top-level Dockerfile installs daskstep itself.
# `daskstep images build-daskstep` builds it once per set of wheels and base, tagged
# daskstep/deps:PY-HASH, and puts the wheels (for the base's Python) into the build context, so
# the build needs no network.
ARG BASE_IMAGE=python:3.12-slim

FROM ${BASE_IMAGE} AS build
# daskstep removes this stage once the image is built (it names its steps' images by this)
LABEL org.daskstep.stage=build
COPY wheels /tmp/wheels
RUN python3 -m venv /opt/daskstep \
 && /opt/daskstep/bin/python -m pip install --no-cache-dir --no-index --find-links /tmp/wheels \
        -r /tmp/wheels/requirements.txt

# The wheels stay in the build stage: the image holds the environment only.
FROM ${BASE_IMAGE}
COPY --from=build /opt/daskstep /opt/daskstep
