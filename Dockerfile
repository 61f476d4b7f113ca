# lora-router gateway image (embedded engine; CPU by default).
# Build:  docker build -t lora-router .
# Run:    docker run -p 8000:8000 -v $PWD/.home:/home/app/.lora-router lora-router
#         (the home must hold a pinned base and adapters: `lora-router demo build --home ...`)
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HUB_OFFLINE=1 \
    LORA_ROUTER_HOME=/home/app/.lora-router

# Install the torch build first (a CPU wheel here; pass TORCH_SPEC/PIP_EXTRA_INDEX_URL for CUDA),
# so the project's torch range is already satisfied and no multi-GB CUDA build is pulled in.
ARG TORCH_SPEC="torch==2.13.0"
RUN pip install "${TORCH_SPEC}"

WORKDIR /app
COPY pyproject.toml README.md ./
COPY router ./router
COPY adapters ./adapters
COPY registry ./registry
RUN pip install . && useradd --create-home app
USER app

EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/readyz').status==200 else 1)"
ENTRYPOINT ["lora-router"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
