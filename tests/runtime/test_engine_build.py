"""``sk-deploy build`` up to the point where TensorRT is needed: every request check runs without TensorRT or a
GPU, and leaves the bundle as it was; without TensorRT the command ends with one line that says how to get it."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sk_deploy.bundle import Bundle, sha256_file
from sk_deploy.engines.tensorrt import BuildError, BuildRequest, check_request
from tests.test_cli import sk_deploy


def test_a_valid_request_is_planned(small_bundle: Bundle) -> None:
    plan = check_request(BuildRequest(small_bundle.path, precision="fp32"))
    assert plan.source == "model.onnx" and plan.input_name == "input"
    assert plan.batch == (1, 8, 32)
    assert plan.profile_shapes() == [(1, 3, 64, 64), (8, 3, 64, 64), (32, 3, 64, 64)]
    plan = check_request(BuildRequest(small_bundle.path, precision="fp32", batch_profile=(2, 4, 16)))
    assert plan.profile_shapes()[2] == (16, 3, 64, 64)


def test_fused_bundle_profile_is_nhwc(fused_bundle: Bundle) -> None:
    plan = check_request(BuildRequest(fused_bundle.path, precision="fp32"))
    assert plan.input_name == "image" and plan.profile_shapes()[0] == (1, 64, 64, 3)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"precision": "fp16"}, "no model.fp16.onnx to build the fp16 engine from; make it first: sk-deploy quantize"),
        ({"precision": "int8"}, "no model.int8.onnx .*--target tensorrt"),
        ({"precision": "bf16"}, "unknown precision 'bf16'"),
        ({"hardware_compat": "turing+"}, "unknown hardware compatibility 'turing\\+'"),
        ({"batch_profile": (8, 4, 16)}, "must satisfy 1 <= MIN <= OPT <= MAX"),
        ({"workspace": 0}, "workspace must be positive"),
    ],
)
def test_bad_requests_are_refused(small_bundle: Bundle, changes: dict, message: str) -> None:
    with pytest.raises(BuildError, match=message):
        check_request(BuildRequest(small_bundle.path, **{"precision": "fp32", **changes}))


def test_build_without_tensorrt_is_one_line_and_leaves_the_bundle(small_bundle: Bundle, tmp_path: Path) -> None:
    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    copy = Path(shutil.copytree(small_bundle.path, tmp_path / "bundle"))
    before = sha256_file(copy / "manifest.json")
    run = sk_deploy("build", str(copy), "--precision", "fp32")
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: TensorRT is not installed")
    assert "pypi.nvidia.com" in lines[0] and "nvcr.io/nvidia/tensorrt" in lines[0]
    assert sha256_file(copy / "manifest.json") == before and not list(copy.glob("*.plan"))
    run = subprocess.run([sys.executable, "-m", "sk_deploy", "build", str(copy), "--precision", "fp16"],
                         capture_output=True, text=True)
    assert run.returncode == 1 and "sk-deploy quantize BUNDLE --precision fp16" in run.stderr
