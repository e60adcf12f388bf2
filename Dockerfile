# syntax=docker/dockerfile:1
# sk-deploy's serving image: `sk-deploy serve` on a bundle mounted at /models/bundle, port 8000.
#
#   docker build -t sk-deploy:gpu .                            # NVIDIA TensorRT base: TensorRT, CUDA, cuDNN
#   docker build --build-arg VARIANT=cpu -t sk-deploy:cpu .    # python slim base, CPU-only PyTorch, OpenVINO
#   docker run --gpus all -p 8000:8000 -v "$PWD/bundles/sknet50:/models/bundle:ro" \
#     -v sk-engines:/var/lib/sk-deploy -e SK_PRECISION=fp16 sk-deploy:gpu
#
# No TensorRT engine is baked in: an engine runs only on the GPU model and with the TensorRT version that built
# it, so the entrypoint builds one on the serving GPU at first start (kept in the /var/lib/sk-deploy volume).
# The Python install steps are docker/install.sh, which CI runs (tests/deploy/test_docker.py).

ARG VARIANT=gpu
# CUDA 13.0 (what onnxruntime-gpu 1.31 is built for), TensorRT 10.13, cuDNN 9, Ubuntu 24.04, Python 3.12. Engines
# built here load in the Triton release of the same month (nvcr.io/nvidia/tritonserver:25.10-py3 ships the same
# TensorRT).
ARG GPU_BASE=nvcr.io/nvidia/tensorrt:25.10-py3
ARG CPU_BASE=python:3.11.11-slim-bookworm

# Stage 1: the wheel (pure Python; nothing of the build toolchain reaches the runtime image).
FROM python:3.11.11-slim-bookworm AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY sk_deploy ./sk_deploy
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

# Stage 2: the runtime, on the base the VARIANT names.
FROM ${GPU_BASE} AS base-gpu
FROM ${CPU_BASE} AS base-cpu

# The base is a stage chosen by VARIANT, both pinned above; hadolint cannot see through the variable.
# hadolint ignore=DL3006
FROM base-${VARIANT} AS runtime
ARG VARIANT
ARG TORCH_VERSION=2.13.0
ARG ONNXRUNTIME_GPU_VERSION=1.31.1
ARG TORCH_INDEX=

COPY docker/install.sh /opt/sk-deploy/install.sh
COPY --from=wheel /dist /opt/sk-deploy/dist
RUN TORCH_VERSION="${TORCH_VERSION}" ONNXRUNTIME_GPU_VERSION="${ONNXRUNTIME_GPU_VERSION}" \
    TORCH_INDEX="${TORCH_INDEX:-}" /opt/sk-deploy/install.sh "${VARIANT}" /opt/sk-deploy/dist \
    && rm -rf /opt/sk-deploy/dist

COPY docker/entrypoint.sh docker/healthcheck.py /opt/sk-deploy/
RUN useradd --system --uid 10001 --user-group --create-home --home-dir /home/sk --shell /usr/sbin/nologin sk \
    && mkdir -p /models/bundle /var/lib/sk-deploy \
    && chown sk:sk /var/lib/sk-deploy

# SK_DEPLOY_CACHE on the volume: OpenVINO's compiled models (CACHE_DIR) survive a restart, so the second start
# imports instead of compiling.
ENV SK_BUNDLE=/models/bundle \
    SK_WORK_DIR=/var/lib/sk-deploy \
    SK_DEPLOY_CACHE=/var/lib/sk-deploy/cache \
    SK_PRECISION=fp32 \
    SK_BUILD_ENGINE=auto \
    SK_HOST=0.0.0.0 \
    SK_PORT=8000 \
    PYTHONUNBUFFERED=1

USER 10001:10001
WORKDIR /home/sk
VOLUME ["/var/lib/sk-deploy"]
EXPOSE 8000
# A first start may build a TensorRT engine (minutes): the start period covers it.
HEALTHCHECK --interval=15s --timeout=5s --start-period=600s --retries=3 \
    CMD ["python3", "/opt/sk-deploy/healthcheck.py"]
ENTRYPOINT ["/opt/sk-deploy/entrypoint.sh"]
CMD ["serve"]
