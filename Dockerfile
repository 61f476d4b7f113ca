# syntax=docker/dockerfile:1
# lora-router gateway image: a builder stage makes the venv, a slim runtime stage runs it as a
# non-root user. CPU torch by default; docs/deployment.md says how it is deployed.
#
#   CPU (default):  docker build -t lora-router .
#   CUDA:           docker build -t lora-router:cu126 --build-arg TORCH=cu126 .
#                   (the cu126 wheels bundle the CUDA user-space libraries; the host needs the
#                   NVIDIA driver and container toolkit). A CUDA base image instead of
#                   python-slim: add --build-arg BASE_IMAGE=nvidia/cuda:12.6.3-runtime-ubuntu24.04
#                   (its Python, 3.12, comes from apt; both stages use the same base, so the
#                   venv's interpreter path is the same in each).
#   Run:            docker run -p 8000:8000 -e LORA_ROUTER_ADMIN_TOKEN=... \
#                     -v lora-home:/home/app/.lora-router lora-router
#                   (the home must hold a pinned base and adapters; the demo's:
#                   docker run --rm -v lora-home:/home/app/.lora-router \
#                     --entrypoint lora-router lora-router demo build)
# `serve` binds 0.0.0.0 here, and refuses to start on a non-loopback address with no admin
# token and no API keys: set LORA_ROUTER_ADMIN_TOKEN or create keys in the home.

ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# python-slim has Python with venv; a CUDA (Ubuntu) base has no Python at all: take Debian's
# hadolint ignore=DL3008
RUN if ! python3 -c "import ensurepip, venv" 2>/dev/null; then \
      apt-get update \
      && apt-get install -y --no-install-recommends python3 python3-venv \
      && rm -rf /var/lib/apt/lists/*; \
    fi

FROM base AS builder
# the torch build: an index at download.pytorch.org/whl/<TORCH> (cpu, cu126, cu128, ...), the
# same choice as `make install TORCH=...`
ARG TORCH=cpu
ARG TORCH_SPEC=torch==2.13.0
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# torch first, from its own index: the project's torch range is then met and pip never pulls
# the multi-GB default (CUDA) build from PyPI for a CPU image (the pin is TORCH_SPEC)
# hadolint ignore=DL3013
RUN pip install --index-url "https://download.pytorch.org/whl/${TORCH}" "${TORCH_SPEC}"
WORKDIR /src
COPY pyproject.toml README.md ./
# every folder of pyproject's [tool.setuptools.package-dir] (tests/test_containers.py checks)
COPY ground ./ground
COPY registry ./registry
COPY adapters ./adapters
COPY training ./training
COPY router ./router
COPY demo ./demo
# a regular (non-editable) install: the runtime stage needs the venv only, not /src
RUN pip install . \
    && python -c "import lora_router.router.app, lora_router.demo.build"

FROM base AS runtime
ARG TORCH=cpu
LABEL org.opencontainers.image.title="lora-router" \
      org.opencontainers.image.description="Inference gateway: one pinned base, hot-swappable LoRA adapters" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.lora-router.torch="${TORCH}"
RUN useradd --create-home --uid 10001 --user-group app \
    && mkdir -p /home/app/.lora-router/log \
    && chown -R app:app /home/app/.lora-router
COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_HUB_DISABLE_TELEMETRY=1 \
    LORA_ROUTER_HOME=/home/app/.lora-router \
    LORA_ROUTER_PORT=8000
# app, by number: Kubernetes' runAsNonRoot can only check a numeric user
USER 10001:10001
WORKDIR /home/app
# the home: base, adapters, cards, routes; <home>/log holds this replica's journal and spool
# (give each replica its own log volume: docker-compose.yml)
VOLUME ["/home/app/.lora-router"]
EXPOSE 8000
# ready = base verified, every referenced adapter resident, every loop alive (router/api/health.py);
# a 503 raises in urlopen: exit 1
HEALTHCHECK --interval=10s --timeout=3s --start-period=180s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('LORA_ROUTER_PORT', '8000'), timeout=2)"]
ENTRYPOINT ["lora-router", "serve", "--host", "0.0.0.0"]
