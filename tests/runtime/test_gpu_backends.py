"""GPU backends (marked: skipped without a CUDA GPU, or without TensorRT): fp32 is IEEE fp32 (TF32 off), so each
agrees with ort-cpu within 1e-4; tf32 is asked for by name; values (not only shapes) are compared after every
switch of batch size or bucket; one ONNX Runtime session serves every captured bucket; TensorRT engines build,
run within their profile, and an engine recorded for another GPU is refused in one line before
deserialization."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from sk_deploy.bundle import Bundle
from sk_deploy.machine import probe_machine
from sk_deploy.runtime.predictor import Predictor
from sk_deploy.runtime.torch_options import TorchOptions

#: fp32 on a GPU against fp32 on the CPU: TF32 alone would give 1.16e-3 on this model
FP32 = 1e-4
#: sizes in an order that switches back and forth (a graph or context reused after another size ran)
SWITCHING = (1, 8, 1, 32, 8, 3)


def check_switching(predictor: Predictor, bound: float, sizes: tuple[int, ...] = SWITCHING) -> None:
    """Every size's logits against ort-cpu, and each size run again after others equal to its first run."""
    first: dict[int, np.ndarray] = {}
    for size in sizes:
        x = predictor.example(size, seed=size)
        logits = predictor.predict(x)
        assert np.abs(logits - reference(predictor.bundle, x)).max() <= bound, size
        if size in first:
            np.testing.assert_allclose(logits, first[size], atol=1e-6, rtol=0)
        first.setdefault(size, logits)


def reference(bundle: Bundle, x: np.ndarray) -> np.ndarray:
    with Predictor(bundle, "ort-cpu") as predictor:
        return predictor.predict(x)


@pytest.mark.gpu
@pytest.mark.parametrize("options", [TorchOptions(device="cuda"), TorchOptions(device="cuda", channels_last=True)])
def test_torch_cuda_fp32_matches_ort_cpu(small_bundle: Bundle, options: TorchOptions) -> None:
    import torch

    with Predictor(small_bundle, "torch", torch=options) as predictor:
        assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
        check_switching(predictor, FP32)


@pytest.mark.gpu
def test_torch_tf32_is_asked_for_by_name(small_bundle: Bundle) -> None:
    import torch

    with Predictor(small_bundle, "torch", "tf32", torch=TorchOptions(device="cuda", tf32=True)) as predictor:
        assert predictor.precision == "tf32" and torch.backends.cudnn.allow_tf32
        x = predictor.example(8)
        assert np.abs(predictor.predict(x) - reference(small_bundle, x)).max() <= 1e-2


@pytest.mark.gpu
def test_torch_fp16_autocast_is_close(small_bundle: Bundle) -> None:
    with Predictor(small_bundle, "torch", "fp16", torch=TorchOptions(device="cuda", fp16=True)) as predictor:
        x = predictor.example(8)
        a, b = predictor.predict(x), reference(small_bundle, x)
        cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
        assert cosine.min() > 0.999


def need_ort_cuda() -> None:
    if "CUDAExecutionProvider" not in probe_machine().ort_providers:
        pytest.skip("onnxruntime-gpu is not installed")


@pytest.mark.gpu
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_ort_cuda_fp32_matches_ort_cpu(small_bundle: Bundle, cuda_graph: bool) -> None:
    need_ort_cuda()
    with Predictor(small_bundle, "ort-cuda", cuda_graph=cuda_graph) as predictor:
        assert predictor.captures_graphs is cuda_graph
        check_switching(predictor, FP32)


@pytest.mark.gpu
def test_one_ort_session_serves_every_bucket(small_bundle: Bundle) -> None:
    need_ort_cuda()
    with Predictor(small_bundle, "ort-cuda", cuda_graph=True) as predictor:
        runner = predictor._runner
        check_switching(predictor, FP32, (1, 2, 4, 8, 4, 1, 8))
        assert runner.sessions == 1 and sorted(runner._graphs) == [1, 2, 4, 8]
        assert predictor.resident(predictor.example(4)) is not None


@pytest.mark.gpu
def test_batcher_buckets_on_cuda_graphs_answer_the_unpadded_values(small_bundle: Bundle) -> None:
    import asyncio
    import time

    from sk_deploy.service.batcher import Batcher, default_buckets
    from sk_deploy.service.metrics import ServiceMetrics

    need_ort_cuda()
    with Predictor(small_bundle, "ort-cuda", cuda_graph=True) as predictor:
        batcher = Batcher(predictor.predict, max_batch=8, max_delay=0.2, max_queue=64,
                          metrics=ServiceMetrics("test"), buckets=default_buckets(8))
        arrays = [predictor.example(n, seed=n) for n in (3, 1, 2, 5, 7)]

        async def main() -> list:
            results = []
            for array in arrays:  # one at a time: 3, 1, 2, 5, 7 padded to 4, 1, 2, 8, 8
                results.append(await batcher.submit(array, time.monotonic() + 30))
            return results

        results = asyncio.run(main())
        batcher.close()
        assert [r.padded_to for r in results] == [4, 1, 2, 8, 8]
        for result, array in zip(results, arrays, strict=True):
            assert np.abs(result.logits - reference(small_bundle, array)).max() <= FP32
        assert predictor._runner.sessions == 1 and sorted(predictor._runner._graphs) == [1, 2, 4, 8]


@pytest.mark.tensorrt
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_tensorrt_engine_builds_and_matches(small_bundle: Bundle, tmp_path: Path, cuda_graph: bool) -> None:
    from sk_deploy.engines.tensorrt import BuildRequest, build_engine

    copy = Bundle.open(shutil.copytree(small_bundle.path, tmp_path / "bundle"))
    name, entry = build_engine(BuildRequest(copy.path, precision="fp32", batch_profile=(1, 4, 8),
                                            timing_cache=tmp_path / "timing.cache"))
    assert (tmp_path / "timing.cache").stat().st_size > 0 and entry["profile"]["max"] == 8
    with Predictor(copy.path, "tensorrt", cuda_graph=cuda_graph) as predictor:
        assert predictor.file == name and predictor.max_batch == 8
        check_switching(predictor, 1e-3, (1, 8, 3, 8, 1))  # fp32 engine: TF32 cleared at build
        if cuda_graph:
            assert sorted(predictor._runner._graphs) == [1, 3, 8]  # one context (and graph) per captured size
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
