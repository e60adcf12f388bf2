"""The GPU path's rules, checked on the CPU with real ONNX Runtime sessions: precision tables with tf32 (refused
on a CPU in one line, TF32 off for fp32 in every GPU provider's options), ``auto`` falling through a backend
that fails to initialise, ``cuda_graph`` honoured with given options, ``close`` dropping the session, and the
batcher padding to buckets for a backend that captures graphs and returning only the real rows."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import time
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from sk_deploy.backends import BACKENDS, BackendSpec
from sk_deploy.bundle import Bundle
from sk_deploy.machine import BackendUnavailable
from sk_deploy.precisions import PRECISIONS, Precision
from sk_deploy.runtime import predictor as predictor_module
from sk_deploy.runtime.backend import Backend
from sk_deploy.runtime.ort_backend import OrtCpuBackend, OrtOptions, provider_list
from sk_deploy.runtime.predictor import Choice, Predictor
from sk_deploy.service.batcher import Batcher, bucket_for, check_buckets, default_buckets
from sk_deploy.service.metrics import ServiceMetrics
from sk_deploy.settings.serve import ServeSettings
from tests.test_cli import sk_deploy


def test_tf32_is_a_precision_of_its_own_in_every_table() -> None:
    assert "tf32" in PRECISIONS and Precision.TF32.graph == "fp32" and Precision.TF32.device == "gpu"
    assert "tf32" in (ServeSettings.model_fields["precision"].description or "")
    assert BACKENDS["ort-cuda"].default_options("fp32").tf32 is False
    assert BACKENDS["ort-cuda"].default_options("tf32").tf32 is True
    assert BACKENDS["torch"].default_options("fp32").tf32 is False
    assert BACKENDS["torch"].default_options("tf32").tf32 is True
    assert "tf32" in BACKENDS["torch"].precisions


def test_fp32_turns_tf32_off_in_the_cuda_provider() -> None:
    fp32 = dict(provider_list("CUDAExecutionProvider", OrtOptions())[0][1])
    assert fp32["use_tf32"] == "0"
    assert dict(provider_list("CUDAExecutionProvider", OrtOptions(tf32=True))[0][1])["use_tf32"] == "1"
    assert dict(provider_list("TensorrtExecutionProvider", OrtOptions())[1][1])["use_tf32"] == "0"  # its CUDA fallback


def test_tf32_is_refused_on_a_cpu_in_one_line(small_bundle: Bundle) -> None:
    for backend in ("ort-cpu", "auto"):
        with pytest.raises(BackendUnavailable) as caught:
            Predictor(small_bundle, backend, "tf32")
        message = str(caught.value)
        assert "\n" not in message and "tf32" in message and "ask for fp32" in message
    result = sk_deploy("predict", "--bundle", str(small_bundle.path), "--backend", "ort-cpu", "--precision", "tf32",
                       str(Path(__file__)))
    assert result.returncode != 0
    assert [line for line in result.stderr.splitlines() if line.strip()] == [result.stderr.strip()]
    assert "tf32" in result.stderr and "ask for fp32" in result.stderr


class FailsToLoad(Backend):
    """A real backend whose initialisation fails, as a provider whose libraries are missing does."""

    name = "fails-to-load"

    def __init__(self, path: str | Path | None, bundle: Bundle | None = None, *, precision: str = "fp32",
                 options: object = None) -> None:
        super().__init__(path, bundle, precision=precision, options=options)
        raise BackendUnavailable("libcudnn.so.9: cannot open shared object file")

    def run(self, batch: np.ndarray) -> np.ndarray:  # pragma: no cover (never constructed)
        raise AssertionError


def listed_first(bundle: Bundle, precision: str, machine: object, spec: BackendSpec) -> Choice:
    """``auto``'s rule for FailsToLoad: always taken."""
    return Choice(spec.name, "model.onnx", "listed first")


@pytest.fixture
def failing_first(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``auto`` with FailsToLoad registered in the table, first in its order."""
    spec = BackendSpec("fails-to-load", f"{__name__}:FailsToLoad", "onnx", "cpu", "fails", "fails to load",
                       auto=-1, auto_rule=f"{__name__}:listed_first")
    monkeypatch.setitem(BACKENDS, spec.name, spec)
    yield


def test_auto_falls_through_a_backend_that_fails_to_initialise(small_bundle: Bundle, failing_first: None) -> None:
    machine = Predictor(small_bundle, "ort-cpu").machine
    assert predictor_module.plan(small_bundle, "auto", "fp32", machine).backend == "fails-to-load"
    after = predictor_module.auto_candidates(small_bundle, "fp32", machine)[1]  # next in auto's order here
    with Predictor(small_bundle, "auto", "fp32") as predictor:
        assert predictor.backend == after.backend in ("openvino", "ort-cpu")
        assert predictor.reason.startswith("fails-to-load failed to initialise (BackendUnavailable: libcudnn.so.9")
        assert predictor.reason.endswith(after.reason)
        assert predictor.predict(predictor.example(2)).shape == (2, small_bundle.classes)
    with pytest.raises(BackendUnavailable, match="libcudnn"):  # asked for by name: no fallback
        Predictor(small_bundle, "fails-to-load", "fp32")


def test_cuda_graph_is_honoured_with_given_options(small_bundle: Bundle) -> None:
    with Predictor(small_bundle, "ort-cpu", ort=OrtOptions(threads=1), cuda_graph=True) as predictor:
        assert predictor._runner.options.cuda_graph is True and predictor._runner.options.threads == 1
        assert predictor.captures_graphs is False  # the CPU provider captures nothing


def test_close_drops_the_onnx_runtime_session(small_bundle: Bundle) -> None:
    backend = OrtCpuBackend(small_bundle.check_file("model.onnx"), small_bundle)
    backend.run(small_bundle.input_spec.example(1))
    session = weakref.ref(backend.session)
    assert backend.sessions == 1
    backend.close()
    gc.collect()
    assert backend.sessions == 0 and session() is None  # nothing else holds it: its memory is ONNX Runtime's again


def test_default_buckets_and_their_checks() -> None:
    assert default_buckets(32) == (1, 2, 4, 8, 16, 32) and default_buckets(24) == (1, 2, 4, 8, 16, 24)
    assert default_buckets(1) == (1,)
    assert check_buckets((16, 1, 4, 32), 32) == (1, 4, 16, 32)
    assert [bucket_for(n, (1, 4, 16)) for n in (1, 2, 4, 5, 16)] == [1, 4, 4, 16, 16]
    with pytest.raises(ValueError, match=r"largest batch bucket \(16\) is below the largest batch \(32\)"):
        check_buckets((1, 16), 32)
    result = sk_deploy("serve", "skresnet18", "--batch-buckets", "1,4", "--max-batch", "8")
    assert result.returncode != 0 and "--batch-buckets: the largest batch bucket (4)" in result.stderr


class Sizes:
    """The batch sizes a real Predictor was run at (it runs them all)."""

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.sizes: list[int] = []

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        self.sizes.append(len(batch))
        return self.predictor.predict(batch)


def gather(batcher: Batcher, arrays: list[np.ndarray]) -> list:
    async def main() -> list:
        deadline = time.monotonic() + 30
        return await asyncio.gather(*(batcher.submit(a, deadline) for a in arrays))

    return asyncio.run(main())


@pytest.mark.parametrize("bundle_name", ["small_bundle", "fused_bundle"])
def test_batcher_pads_to_buckets_and_strips_the_padding(bundle_name: str, request: pytest.FixtureRequest) -> None:
    bundle: Bundle = request.getfixturevalue(bundle_name)
    with Predictor(bundle, "ort-cpu", "fp32") as predictor:
        arrays = [predictor.example(n, seed=i) for i, n in enumerate((1, 2, 2))]  # 5 rows: padded to 8
        expected = [predictor.predict(a) for a in arrays]
        run = Sizes(predictor)
        batcher = Batcher(run, max_batch=8, max_delay=0.5, max_queue=64, metrics=ServiceMetrics("test"),
                          buckets=(1, 4, 8))
        results = gather(batcher, arrays)
        batcher.close()
        assert run.sizes and set(run.sizes) <= {1, 4, 8} and 8 in run.sizes
        for result, array, want in zip(results, arrays, expected, strict=True):
            assert result.logits.shape == (len(array), bundle.classes)  # no padding row comes back
            np.testing.assert_allclose(result.logits, want, atol=1e-4, rtol=0)
        assert {r.padded_to for r in results} <= {1, 4, 8}
        plain = Sizes(predictor)  # without buckets: the batch runs at its own size
        batcher = Batcher(plain, max_batch=8, max_delay=0.5, max_queue=64, metrics=ServiceMetrics("test"))
        gather(batcher, arrays)
        batcher.close()
        assert sum(plain.sizes) == 5


class CapturingOrtCpu(OrtCpuBackend):
    """ONNX Runtime's CPU provider flagged as capturing graphs: the service must pad its batches to buckets."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.captures_graphs = True


def test_service_pads_for_a_capturing_backend(small_bundle: Bundle, monkeypatch: pytest.MonkeyPatch) -> None:
    from sk_deploy.service.served import Service, ServiceConfig

    spec = dataclasses.replace(BACKENDS["ort-cpu"], name="ort-cpu-capturing", cls=f"{__name__}:CapturingOrtCpu",
                               auto=None)
    monkeypatch.setitem(BACKENDS, spec.name, spec)
    service = Service(ServiceConfig(bundle=small_bundle.path, backend=spec.name, max_batch=8, warmup=False))
    service.load()
    try:
        assert service.batcher is not None and service.batcher.buckets == (1, 2, 4, 8)
        array = small_bundle.input_spec.example(3, seed=3)
        logits, results = asyncio.run(service.infer(array, time.monotonic() + 30))
        assert [r.padded_to for r in results] == [4] and logits.shape == (3, small_bundle.classes)
        with Predictor(small_bundle, "ort-cpu") as plain:
            np.testing.assert_allclose(logits, plain.predict(array), atol=1e-4, rtol=0)
    finally:
        service.close()
