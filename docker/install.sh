#!/bin/sh
# Installs sk-deploy and its runtime into the image's Python: the one place the Dockerfile's Python steps live,
# so CI can run them (tests/deploy/test_docker.py runs the cpu variant for real in a virtual environment).
#
#   install.sh cpu|gpu WHEEL_DIR
#
# cpu: PyTorch's CPU build from PyTorch's CPU index (PyPI's default Linux torch is a CUDA build of several GB),
#      then the wheel with its dependencies (onnxruntime, the CPU build, and openvino, the fastest CPU path).
# gpu: runs on NVIDIA's TensorRT image, whose TensorRT, CUDA and cuDNN the engines and ONNX Runtime use:
#      PyTorch's CUDA build from PyTorch's index for the image's CUDA, the wheel, then onnxruntime-gpu in place of
#      onnxruntime (both install the same module, so only one may be present).
# Versions are pinned here; override them with the environment (Docker build args of the same names).
set -eu

variant="${1:?usage: install.sh cpu|gpu WHEEL_DIR}"
wheel_dir="${2:?usage: install.sh cpu|gpu WHEEL_DIR}"
TORCH_VERSION="${TORCH_VERSION:-2.13.0}"
ONNXRUNTIME_GPU_VERSION="${ONNXRUNTIME_GPU_VERSION:-1.31.1}"
PYTHON="${PYTHON:-python3}"

case "$variant" in
  cpu) torch_index="${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}" ;;
  gpu) torch_index="${TORCH_INDEX:-https://download.pytorch.org/whl/cu130}" ;;
  *) echo "install.sh: unknown variant '$variant' (cpu or gpu)" >&2; exit 2 ;;
esac

set -- "$wheel_dir"/sk_deploy-*.whl
if [ "$#" -ne 1 ] || [ ! -f "$1" ]; then
  echo "install.sh: expected exactly one sk_deploy wheel in $wheel_dir" >&2
  exit 2
fi
wheel="$1"

# Ubuntu's system Python refuses pip installs without this (PEP 668); older pips ignore it.
export PIP_BREAK_SYSTEM_PACKAGES=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
pip() { "$PYTHON" -m pip "$@"; }

if [ "$variant" = gpu ]; then
  "$PYTHON" -c "import tensorrt" || {
    echo "install.sh: the base image has no TensorRT Python module; use nvcr.io/nvidia/tensorrt" >&2
    exit 1
  }
fi
pip install --index-url "$torch_index" "torch==$TORCH_VERSION"
pip install "$wheel"
if [ "$variant" = gpu ]; then
  pip uninstall -y onnxruntime
  pip install "onnxruntime-gpu==$ONNXRUNTIME_GPU_VERSION"
fi
"$PYTHON" -m sk_deploy --help >/dev/null
"$PYTHON" - "$variant" <<'PY'
import sys

import onnxruntime
import openvino
import torch

import sk_deploy.cli  # noqa: F401  (the command line imports)

providers = onnxruntime.get_available_providers()
print(f"installed: torch {torch.__version__}, onnxruntime {onnxruntime.__version__} ({', '.join(providers)}), "
      f"openvino {openvino.__version__} ({', '.join(openvino.Core().available_devices)})")
if sys.argv[1] == "gpu" and "CUDAExecutionProvider" not in providers:
    sys.exit("install.sh: onnxruntime-gpu did not install its CUDA provider")
PY
