# syntax=docker/dockerfile:1
# A training worker on an NVIDIA GPU (needs the NVIDIA Container Toolkit on the host).
#   docker build -f docker/worker.Dockerfile -t distill-worker .
# The torch wheel ships its own CUDA libraries; the base image brings a matching cuDNN/driver userland.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04
FROM ${CUDA_IMAGE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv \
    && pip install --upgrade pip

RUN pip install --index-url "${TORCH_INDEX_URL}" "torch==${TORCH_VERSION}"

WORKDIR /app
COPY pyproject.toml README.md* ./
COPY distill ./distill
COPY api ./api
COPY worker ./worker
COPY migrations ./migrations
RUN pip install ".[server]" \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin distill

USER distill
ENV DISTILL_HOME=/home/distill/.distill \
    DISTILL_DEVICE=auto
WORKDIR /home/distill

CMD ["distill", "worker"]
