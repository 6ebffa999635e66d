# syntax=docker/dockerfile:1
# The HTTP API, the one-shot `migrate` service and CPU-only workers (compose profile `cpu`): CPU-only torch.
#   docker build -f docker/api.Dockerfile -t distill-api .
FROM python:3.11-slim-bookworm

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# torch first and from the CPU index, so that installing the project does not pull a CUDA build.
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
ENV DISTILL_HOME=/home/distill/.distill
WORKDIR /home/distill
EXPOSE 8000

HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

CMD ["distill", "serve", "--host", "0.0.0.0", "--port", "8000"]
