"""``sk-deploy predict --bundle``: a real photo through the bundle's graph on the Predictor, the same top-5 as
the Predictor gives directly; a backend this machine lacks is one line and exit 1."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from sk_deploy.bundle import Bundle
from sk_deploy.images import load_batch
from sk_deploy.machine import nvidia_driver_visible, probe_machine
from sk_deploy.runtime.classify import softmax
from sk_deploy.runtime.predictor import Predictor, plan
from tests.test_cli import sk_deploy


@pytest.mark.skipif(nvidia_driver_visible(), reason="on a machine with an NVIDIA driver auto asks PyTorch about CUDA")
def test_predict_bundle_on_a_cpu_machine_imports_no_pytorch(small_bundle: Bundle, real_photo: Path) -> None:
    """An ONNX graph through ``predict --bundle`` never needs PyTorch (2 s and 300 MB to import)."""
    probe = ("import sys\nfrom sk_deploy.cli import app\ntry:\n"
             f"    app(['predict', {str(real_photo)!r}, '--bundle', {str(small_bundle.path)!r}, '--json'], "
             "prog_name='sk-deploy')\nexcept SystemExit as exc:\n    print('exit', exc.code)\n"
             "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip().splitlines()[-2:] == ["exit 0", "False"], done.stdout + done.stderr


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_predict_bundle_matches_the_predictor(small_bundle: Bundle, real_photo: Path, backend: str) -> None:
    run = sk_deploy("predict", str(real_photo), "--bundle", str(small_bundle.path), "--backend", backend, "--json")
    assert run.returncode == 0, run.stderr
    [result] = json.loads(run.stdout)
    # auto on a CPU: the CPU rule for this machine's CPU and runtimes (tests/runtime/test_cpu_choice.py)
    expected_backend = (plan(small_bundle.manifest, "auto", "fp32", probe_machine()).backend
                        if backend == "auto" and not torch.cuda.is_available() else result["backend"])
    assert result["backend"] == expected_backend and result["model"] == "skresnet18"
    if backend == "auto":
        assert f"backend {result['backend']}:" in run.stderr  # auto says what it chose and why
    batch = load_batch([real_photo], small_bundle.preprocess)
    with Predictor(small_bundle, "ort-cpu") as predictor:
        probs = softmax(predictor.predict(batch))[0]
    assert [p["index"] for p in result["predictions"]] == np.argsort(-probs)[:5].tolist()
    for p in result["predictions"]:
        assert p["probability"] == pytest.approx(probs[p["index"]], rel=1e-3)


def test_predict_fused_bundle_feeds_uint8(fused_bundle: Bundle, generated_jpeg: Path) -> None:
    run = sk_deploy("predict", str(generated_jpeg), "--bundle", str(fused_bundle.path), "-k", "1")
    assert run.returncode == 0, run.stderr
    assert "skresnet18" in run.stdout and "probability" in run.stdout


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_tensorrt_backend_without_tensorrt_is_one_line(small_bundle: Bundle, generated_jpeg: Path) -> None:
    run = sk_deploy("predict", str(generated_jpeg), "--bundle", str(small_bundle.path), "--backend", "tensorrt")
    assert run.returncode == 1 and not run.stdout
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("error: TensorRT is not installed") and "pypi.nvidia.com" in lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--precision", "int8"], "no int8 graph"),
        (["--model", "sknet50"], "--bundle runs the bundle's own model"),
    ],
)
def test_predict_bundle_errors(small_bundle: Bundle, generated_jpeg: Path, args: list[str], message: str) -> None:
    run = sk_deploy("predict", str(generated_jpeg), "--bundle", str(small_bundle.path), *args)
    assert run.returncode == 1 and message in run.stderr and "Traceback" not in run.stderr


def test_an_unknown_backend_is_a_usage_error_naming_the_table(small_bundle: Bundle, generated_jpeg: Path) -> None:
    run = sk_deploy("predict", str(generated_jpeg), "--bundle", str(small_bundle.path), "--backend", "onnx")
    assert run.returncode == 2 and "error: --backend: 'onnx' is not one of auto, tensorrt," in run.stderr
    assert "openvino" in run.stderr and "Traceback" not in run.stderr


def test_backend_without_bundle_is_refused(generated_jpeg: Path) -> None:
    run = sk_deploy("predict", str(generated_jpeg), "--backend", "ort-cpu")
    assert run.returncode == 1 and "add --bundle DIR" in run.stderr
