# syntax=docker/dockerfile:1
# The style-transfer server: TorchServe, Java 17 and this project's archives, run as a
# non-root user. Build the archives first (scripts/build.sh), then:
#   CPU (default): docker build -t style-transfer .
#   GPU:           docker build --build-arg VARIANT=gpu -t style-transfer:gpu .
# model_store/*.mar is baked in; mount another store over /home/model-server/model-store
# to serve different archives without rebuilding. Settings: docker/entrypoint.py.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- builder: the virtual environment, with the wheels for the chosen variant ----------
FROM ${PYTHON_IMAGE} AS builder
# cpu: torch from PyTorch's CPU-only index (no CUDA libraries, ~1/4 the size);
# gpu: torch from PyPI (its Linux wheels are the CUDA builds) and onnxruntime-gpu.
ARG VARIANT=cpu
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY requirements.txt /tmp/requirements.txt
RUN python -m venv /opt/venv \
 && case "$VARIANT" in \
      cpu) grep -E '^(torch|torchvision)==' /tmp/requirements.txt > /tmp/torch.txt \
           && /opt/venv/bin/pip install --no-cache-dir --index-url "$TORCH_CPU_INDEX" -r /tmp/torch.txt ;; \
      gpu) sed -i 's/^onnxruntime==/onnxruntime-gpu==/' /tmp/requirements.txt ;; \
      *) echo "VARIANT must be cpu or gpu, not '$VARIANT'" >&2; exit 1 ;; \
    esac \
 && /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt

# ---- runtime: Java for TorchServe's frontend, the venv, the server code ----------------
FROM ${PYTHON_IMAGE} AS runtime
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Debian's JRE is tracked by the base image's release, not pinned (DL3008): pinning would
# break the build at every Debian security update. /usr/share/man/man1: the JRE's
# postinst needs it and slim images drop it.
# hadolint ignore=DL3008
RUN mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 model-server \
 && useradd --system --uid 10001 --gid model-server --create-home --home-dir /home/model-server model-server
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# Root-owned and read-only for the server user: it can read its archives and code, not change them.
COPY config.properties ./
COPY server/ server/
COPY docker/ docker/
# The KServe predictor (another command of the same image: docker/kserve_predictor.py) runs
# this checkout's code on the same archives.
COPY core/ core/
COPY predictor/ predictor/
COPY optimize/ optimize/
COPY lossnet/ lossnet/
COPY model_store/ /home/model-server/model-store/
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    STYLE_MODEL_STORE=/home/model-server/model-store \
    STYLE_RUNTIME_DIR=/home/model-server/runtime
USER 10001:10001
# Inference and metrics; management (8081) and gRPC stay on loopback inside the container.
EXPOSE 8080 8082
HEALTHCHECK --interval=30s --timeout=10s --start-period=180s --retries=3 \
    CMD ["python", "/app/docker/healthcheck.py"]
# The entrypoint, not `torchserve --foreground`, so that SIGTERM reaches java (see its docstring).
ENTRYPOINT ["python", "/app/docker/entrypoint.py"]
