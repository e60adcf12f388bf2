"""The Predictor on this machine: the backend auto picks and why, input checking, fused-preprocess bundles,
precision graphs, and the one-line messages for what the machine lacks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sk_deploy.bundle import Bundle, InputError
from sk_deploy.machine import BackendUnavailable, Machine
from sk_deploy.runtime.ort_backend import OrtOptions
from sk_deploy.runtime.predictor import Predictor, onnx_file, plan

CPU_ONLY = Machine(cuda=False, gpu_name=None, compute_capability=None, ort_providers=("CPUExecutionProvider",),
                   tensorrt_version=None)
H100 = Machine(cuda=True, gpu_name="NVIDIA H100 80GB HBM3", compute_capability=(9, 0),
               ort_providers=("CUDAExecutionProvider", "CPUExecutionProvider"), tensorrt_version="11.4.0")


def engine_entry(gpu: str = "NVIDIA H100 80GB HBM3", cc: tuple[int, int] = (9, 0), version: str = "11.4.0") -> dict:
    return {"role": "engine", "precision": "fp16", "tensorrt": {"version": version},
            "gpu": {"name": gpu, "compute_capability": list(cc)}, "hardware_compat": "none"}


def test_auto_order_on_other_machines(small_bundle: Bundle) -> None:
    manifest = {**small_bundle.manifest, "files": dict(small_bundle.manifest["files"])}
    assert plan(manifest, "auto", "fp32", CPU_ONLY).backend == "ort-cpu"
    assert plan(manifest, "auto", "fp32", H100).backend == "ort-cuda"  # no engine in the bundle
    manifest["files"]["model.fp16.h100-80gb-hbm3.trt11.4.plan"] = engine_entry()
    manifest["files"]["model.fp16.onnx"] = {"role": "fp16"}
    choice = plan(manifest, "auto", "fp16", H100)
    assert (choice.backend, choice.file) == ("tensorrt", "model.fp16.h100-80gb-hbm3.trt11.4.plan")
    older = Machine(**{**H100.__dict__, "tensorrt_version": "10.13.0"})
    choice = plan(manifest, "auto", "fp16", older)
    assert choice.backend == "ort-cuda" and "built with TensorRT 11.4.0" in choice.reason
    no_ort_gpu = Machine(**{**H100.__dict__, "ort_providers": ("CPUExecutionProvider",), "tensorrt_version": None})
    assert plan(manifest, "auto", "fp32", no_ort_gpu).backend == "torch"
    with pytest.raises(BackendUnavailable, match="no int8 graph"):
        plan(manifest, "auto", "int8", no_ort_gpu)
    manifest["files"]["model.int8-cpu.onnx"] = {"role": "int8-cpu"}
    choice = plan(manifest, "auto", "int8", no_ort_gpu)  # PyTorch has no int8 path: back to the CPU form
    assert (choice.backend, choice.file) == ("ort-cpu", "model.int8-cpu.onnx")


def test_named_backends_that_cannot_run_say_why(small_bundle: Bundle) -> None:
    manifest = small_bundle.manifest
    with pytest.raises(BackendUnavailable, match=r"no fp16 graph .*sk-deploy quantize BUNDLE --precision fp16"):
        plan(manifest, "ort-cpu", "fp16", CPU_ONLY)
    with pytest.raises(BackendUnavailable, match="unknown backend 'onnx'"):
        plan(manifest, "onnx", "fp32", CPU_ONLY)
    with pytest.raises(BackendUnavailable, match="unknown precision 'int4'"):
        plan(manifest, "ort-cpu", "int4", CPU_ONLY)
    with pytest.raises(BackendUnavailable, match="torch backend runs fp32"):
        plan(manifest, "torch", "int8", CPU_ONLY)
    with pytest.raises(BackendUnavailable, match=r"no fp16 TensorRT engine.*sk-deploy build"):
        plan(manifest, "tensorrt", "fp16", H100)


def test_int8_on_cpu_prefers_the_cpu_form() -> None:
    files = {"model.onnx": {}, "model.int8.onnx": {}, "model.int8-cpu.onnx": {}}
    assert onnx_file({"files": files}, "ort-cpu", "int8") == "model.int8-cpu.onnx"
    assert onnx_file({"files": files}, "ort-cuda", "int8") == "model.int8.onnx"
    del files["model.int8-cpu.onnx"]
    assert onnx_file({"files": files}, "ort-cpu", "int8") == "model.int8.onnx"


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("backend", ["ort-cuda", "ort-tensorrt", "tensorrt"])
def test_gpu_backends_without_a_gpu_are_one_line(small_bundle: Bundle, backend: str) -> None:
    with pytest.raises(BackendUnavailable) as raised:
        Predictor(small_bundle, backend)
    message = str(raised.value)
    assert "\n" not in message
    assert ("TensorRT is not installed" in message and "pypi.nvidia.com" in message) or "needs an NVIDIA GPU" in message


def test_input_is_checked_and_named(small_bundle: Bundle) -> None:
    with Predictor(small_bundle, "ort-cpu") as predictor:
        assert predictor.input_spec.describe() == "float32 (N, 3, 64, 64)"
        one = predictor.example(1)[0]
        assert predictor.predict(one).shape == (1, 1000)  # one picture without the batch axis
        assert predictor.predict(one.astype(np.float64)).dtype == np.float32
        for bad in (np.zeros((2, 64, 64, 3), np.float32), np.zeros((2, 3, 64, 64), np.uint8),
                    np.zeros((0, 3, 64, 64), np.float32)):
            with pytest.raises(InputError, match=r"expected a float32 \(N, 3, 64, 64\) NCHW array, got"):
                predictor.predict(bad)


def test_fused_preprocess_bundle_takes_uint8_on_both_backends(fused_bundle: Bundle) -> None:
    with Predictor(fused_bundle, "ort-cpu") as ort, Predictor(fused_bundle, "torch") as eager:
        assert ort.input_spec.describe() == "uint8 (N, 64, 64, 3)" and ort.input_spec.layout == "NHWC"
        x = ort.example(4)
        assert x.dtype == np.uint8
        a, b = ort.predict(x), eager.predict(x)
        assert np.abs(a - b).max() <= 1e-4 and np.abs(b).max() > 0.5
        with pytest.raises(InputError, match="expected a uint8"):
            ort.predict(x.astype(np.float32))


def test_ort_options_threads_and_level(small_bundle: Bundle) -> None:
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64), dtype=np.float32)
    with Predictor(small_bundle, "ort-cpu") as default, \
            Predictor(small_bundle, "ort-cpu", ort=OrtOptions(threads=1, optimization="basic")) as tuned:
        assert np.abs(default.predict(x) - tuned.predict(x)).max() <= 1e-4
    with pytest.raises(ValueError, match="unknown optimisation level 'max'"):
        Predictor(small_bundle, "ort-cpu", ort=OrtOptions(optimization="max"))


def test_a_changed_graph_is_refused(small_bundle: Bundle, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(small_bundle.path, tmp_path / "copy"))
    with open(copy / "model.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(Exception, match="sha256 differs from the manifest"):
        Predictor(copy, "ort-cpu")
