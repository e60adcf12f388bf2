"""GPU backends (marked: skipped without a CUDA GPU, or without TensorRT): each agrees with ort-cpu on the same
bundle; TensorRT engines build, run within their profile, and an engine recorded for another GPU is refused in
one line before deserialization."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sk_deploy.bundle import Bundle
from sk_deploy.runtime.availability import probe_machine
from sk_deploy.runtime.predictor import Predictor
from sk_deploy.runtime.torch_backend import TorchOptions


def reference(bundle: Bundle, x: np.ndarray) -> np.ndarray:
    with Predictor(bundle, "ort-cpu") as predictor:
        return predictor.predict(x)


@pytest.mark.gpu
@pytest.mark.parametrize("options", [TorchOptions(device="cuda"), TorchOptions(device="cuda", channels_last=True)])
def test_torch_cuda_matches_ort_cpu(small_bundle: Bundle, options: TorchOptions) -> None:
    with Predictor(small_bundle, "torch", torch=options) as predictor:
        x = predictor.example(8)
        assert np.abs(predictor.predict(x) - reference(small_bundle, x)).max() <= 1e-3


@pytest.mark.gpu
def test_torch_fp16_autocast_is_close(small_bundle: Bundle) -> None:
    with Predictor(small_bundle, "torch", "fp16", torch=TorchOptions(device="cuda", fp16=True)) as predictor:
        x = predictor.example(8)
        a, b = predictor.predict(x), reference(small_bundle, x)
        cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert cosine.min() > 0.999


@pytest.mark.gpu
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_ort_cuda_matches_ort_cpu(small_bundle: Bundle, cuda_graph: bool) -> None:
    if "CUDAExecutionProvider" not in probe_machine().ort_providers:
        pytest.skip("onnxruntime-gpu is not installed")
    with Predictor(small_bundle, "ort-cuda", cuda_graph=cuda_graph) as predictor:
        for size in (1, 8, 1):
            x = predictor.example(size, seed=size)
            assert np.abs(predictor.predict(x) - reference(small_bundle, x)).max() <= 1e-3


@pytest.mark.tensorrt
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_tensorrt_engine_builds_and_matches(small_bundle: Bundle, tmp_path: Path, cuda_graph: bool) -> None:
    from sk_deploy.engines.tensorrt import BuildRequest, build_engine

    copy = Bundle.open(shutil.copytree(small_bundle.path, tmp_path / "bundle"))
    name, entry = build_engine(BuildRequest(copy.path, precision="fp32", batch=(1, 4, 8),
                                            timing_cache=tmp_path / "timing.cache"))
    assert (tmp_path / "timing.cache").stat().st_size > 0 and entry["profile"]["max"] == 8
    with Predictor(copy.path, "tensorrt", cuda_graph=cuda_graph) as predictor:
        assert predictor.file == name and predictor.max_batch == 8
        for size in (1, 8, 3):
            x = predictor.example(size, seed=size)
            assert np.abs(predictor.predict(x) - reference(copy, x)).max() <= 1e-2
        x = predictor.example(12)  # beyond the profile: the Predictor splits the batch
        assert predictor.predict(x).shape == (12, 1000)


@pytest.mark.tensorrt
def test_engine_for_another_gpu_is_refused(small_bundle: Bundle, tmp_path: Path) -> None:
    from sk_deploy.engines.compat import EngineMismatch
    from sk_deploy.engines.tensorrt import BuildRequest, build_engine

    copy = Path(shutil.copytree(small_bundle.path, tmp_path / "bundle"))
    name, _ = build_engine(BuildRequest(copy, precision="fp32"))
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["files"][name]["gpu"] = {"name": "NVIDIA A2", "compute_capability": [8, 6]}
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(EngineMismatch, match="built for NVIDIA A2"):
        Predictor(copy, "tensorrt")
