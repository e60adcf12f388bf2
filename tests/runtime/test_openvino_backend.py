"""The openvino backend on real OpenVINO sessions: fp32 (f32 pinned) agrees with ort-cpu on every model design
(``one_model_per_design``) at batch 1 and 8; bf16 runs where the CPU computes bfloat16 natively and stays within
the bf16 gate; int8 takes the graph measured fastest; the precision compiled is read back; threads, streams, hint
and the compile cache."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from sk_deploy.bundle import Bundle
from sk_deploy.machine import BackendUnavailable, detect_cpu
from sk_deploy.metrics import agreement
from sk_deploy.precisions import Precision
from sk_deploy.runtime.openvino_backend import OpenVinoBackend, OpenVinoOptions
from sk_deploy.runtime.predictor import Predictor
from tests.bundles import BundleCache, one_model_per_design

pytest.importorskip("openvino", reason="OpenVINO is a default dependency; this install lacks it")
CPU = detect_cpu()
NO_BF16 = Precision.BF16.cpu_refusal(CPU)
needs_bf16 = pytest.mark.skipif(NO_BF16 is not None, reason=f"no native bf16 on this CPU: {NO_BF16}")


@pytest.mark.parametrize("name", one_model_per_design())
def test_openvino_fp32_agrees_with_ort_cpu_on_every_design(name: str, bundles: BundleCache, tmp_path: Path) -> None:
    bundle = bundles.get(name)
    options = OpenVinoOptions(cache_dir=str(tmp_path))
    with Predictor(bundle, "ort-cpu") as ort, Predictor(bundle, "openvino", openvino=options) as ov:
        assert (ov.backend, ov.file) == ("openvino", "model.onnx")
        assert ov.description == "openvino fp32 (model.onnx; compiled f32)"  # read back from the compiled model
        x = ort.example(8, seed=2)
        for batch in (1, 8):
            a, b = ort.predict(x[:batch]), ov.predict(x[:batch])
            assert b.shape == (batch, 1000) and b.dtype == np.float32
            assert np.abs(a - b).max() <= 1e-4
        assert np.abs(a).max() > 0.5, "logits should be O(1): a test on nearly-zero logits could not fail"


@needs_bf16
def test_bf16_runs_natively_within_its_gate(small_bundle: Bundle, tmp_path: Path) -> None:
    options = OpenVinoOptions(cache_dir=str(tmp_path))
    with Predictor(small_bundle, "ort-cpu") as ort, Predictor(small_bundle, "openvino", "bf16", openvino=options) as ov:
        assert ov.description == "openvino bf16 (model.onnx; compiled bf16)"
        x = ort.example(8, seed=3)
        reference, output = ort.predict(x), ov.predict(x)
    figures = agreement(reference, output)
    assert figures.cosine_mean >= 0.999
    assert np.abs(reference - output).max() > 1e-6, "bf16 that matches fp32 exactly did not run in bf16"


def test_bf16_refused_in_one_line_where_the_cpu_lacks_it(small_bundle: Bundle) -> None:
    from sk_deploy.machine import CpuFeatures

    avx2_only = CpuFeatures("AMD EPYC 7B12", frozenset({"avx", "avx2", "fma"}))
    with pytest.raises(BackendUnavailable) as caught:
        OpenVinoBackend(small_bundle.file("model.onnx"), small_bundle, precision="bf16", cpu=avx2_only)
    message = str(caught.value)
    assert "\n" not in message and "native bfloat16" in message and "AMD EPYC 7B12" in message
    assert "--precision fp32" in message


def test_int8_runs_the_faster_graph_and_agrees_with_ort_on_it(small_bundle: Bundle, tmp_path: Path) -> None:
    from sk_deploy.precision.pipeline import quantize_bundle
    from sk_deploy.settings.precision import QuantizeSettings
    from tests.conftest import make_image

    pictures = tmp_path / "pictures"
    pictures.mkdir()
    for i in range(4):
        make_image(pictures / f"p{i}.jpg", size=(80, 72), seed=i)
    path = tmp_path / "bundle"
    shutil.copytree(small_bundle.path, path)
    for target in ("tensorrt", "cpu"):
        quantize_bundle(QuantizeSettings(bundle=path, precision="int8", target=target, images=pictures, calib_size=3,
                                        holdout_size=1, gate=False, measure_speed=False))
    options = OpenVinoOptions(cache_dir="")
    with Predictor(path, "openvino", "int8", openvino=options) as ov:
        # both int8 graphs are there: OpenVINO runs the TensorRT form, measured faster (benchmarks/openvino)
        assert ov.file == "model.int8.onnx" and ov.description.endswith("compiled f32)")
        x = ov.example(4, seed=4)
        output = ov.predict(x)
    with OpenVinoBackend(path / "model.int8.onnx", precision="fp32", options=options) as same_graph_f32:
        assert same_graph_f32.compiled_precision == "f32"
    from sk_deploy.runtime.ort_backend import OrtCpuBackend

    with OrtCpuBackend(path / "model.int8.onnx") as ort:  # the session settings this float16 Q/DQ form needs
        reference = ort.run(x)
    assert agreement(reference, output).cosine_mean >= 0.99


def test_fused_preprocess_bundle_takes_uint8_pictures(fused_bundle: Bundle) -> None:
    with Predictor(fused_bundle, "ort-cpu") as ort, Predictor(fused_bundle, "openvino",
                                                             openvino=OpenVinoOptions(cache_dir="")) as ov:
        x = ort.example(2, seed=5)
        assert x.dtype == np.uint8
        assert np.abs(ort.predict(x) - ov.predict(x)).max() <= 1e-4


def test_threads_streams_and_hint_reach_the_compiled_model(small_bundle: Bundle) -> None:
    path = small_bundle.file("model.onnx")
    with OpenVinoBackend(path, precision="fp32", options=OpenVinoOptions(threads=1, streams=1, cache_dir="")) as ov:
        assert (ov.threads, ov.streams) == (1, 1)
        assert ov.hint == "LATENCY"
    with OpenVinoBackend(path, precision="fp32", options=OpenVinoOptions(hint="THROUGHPUT", cache_dir="")) as ov:
        assert ov.hint == "THROUGHPUT"
        assert ov.run(np.zeros((1, 3, 64, 64), np.float32)).shape == (1, 1000)
    with pytest.raises(BackendUnavailable, match="unknown OpenVINO performance hint 'FAST'"):
        OpenVinoBackend(path, options=OpenVinoOptions(hint="FAST"))


def test_the_compile_cache_is_written_then_reused(small_bundle: Bundle, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    path = small_bundle.file("model.onnx")
    first = OpenVinoBackend(path, options=OpenVinoOptions(cache_dir=str(cache)))
    x = np.random.default_rng(6).standard_normal((2, 3, 64, 64), dtype=np.float32)
    expected = first.run(x)
    first.close()
    blobs = sorted(p.name for p in cache.iterdir())
    assert blobs and all(p.stat().st_size > 0 for p in cache.iterdir())
    second = OpenVinoBackend(path, options=OpenVinoOptions(cache_dir=str(cache)))
    np.testing.assert_array_equal(second.run(x), expected)
    second.close()
    assert sorted(p.name for p in cache.iterdir()) == blobs  # imported, not compiled and stored again
    assert second.closed and second.compiled is None


def test_a_graph_openvino_cannot_read_is_one_line(tmp_path: Path) -> None:
    broken = tmp_path / "model.onnx"
    broken.write_bytes(b"not an onnx file")
    with pytest.raises(BackendUnavailable, match=r"model.onnx: OpenVINO cannot compile it") as caught:
        OpenVinoBackend(broken, options=OpenVinoOptions(cache_dir=""))
    assert "\n" not in str(caught.value)
