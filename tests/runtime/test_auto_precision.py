"""``--precision auto``, the default of the Predictor, ``serve`` and ``predict``: on real bundles and real sessions,
fp32 with its reason where nothing faster passed its gate (here: no native bfloat16, no int8 graph), the gated
int8 graph once the bundle has one, a recorded speed-up said or honoured, ``--precision fp32`` pinning, bf16 where
the CPU computes it natively (skipped elsewhere, saying why), and the line ``serve`` prints."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pytest

from sk_deploy.bundle import Bundle
from sk_deploy.machine import detect_cpu, probe_machine
from sk_deploy.metrics import agreement
from sk_deploy.precision.pipeline import gate_bf16_where_native, quantize_bundle
from sk_deploy.runtime.auto_precision import choose_precision
from sk_deploy.runtime.openvino_backend import OpenVinoBackend, OpenVinoOptions, int8_float_parts
from sk_deploy.runtime.precision_speed import measure_speedup
from sk_deploy.runtime.predictor import Predictor, plan
from sk_deploy.settings.precision import QuantizeSettings
from tests.servers import served

NATIVE_BF16 = detect_cpu().native_bf16
NO_BF16 = f"needs a CPU with native bfloat16 (avx512_bf16 or amx_bf16); this one is {detect_cpu().describe()}"


def _copy(bundle: Bundle, folder: Path) -> Path:
    shutil.copytree(bundle.path, folder)
    return folder


@pytest.fixture(scope="module")
def int8_bundle(small_bundle: Bundle, shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the small bundle with a gated CPU int8 graph (real photos; no speed measured)."""
    path = _copy(small_bundle, tmp_path_factory.mktemp("auto") / "bundle")
    result = quantize_bundle(QuantizeSettings(bundle=path, precision="int8", target="cpu",
                                             images=shared_data / "imagenet-samples", calib_size=32, holdout_size=16,
                                             measure_speed=False))
    assert result.written and result.accuracy.passed, result.accuracy.failures
    return path


@pytest.mark.skipif(NATIVE_BF16, reason="this CPU computes bfloat16 natively: the bf16 test covers it")
def test_without_native_bf16_the_default_is_fp32_and_says_why(small_bundle: Bundle) -> None:
    with Predictor(small_bundle) as predictor:
        choice = predictor.precision_choice
        assert predictor.precision == "fp32" and choice.precision == "fp32"
        assert choice.reason.startswith("fp32: no faster precision passed its gate for this bundle here")
        assert "bf16: this CPU has no native bfloat16" in choice.reason
        assert "int8: the bundle has no int8" in choice.reason
        assert "sk-deploy quantize BUNDLE --precision int8 --images DIR" in choice.reason
        assert "--precision bf16" not in choice.reason and "\n" not in choice.reason
        assert predictor.predict(predictor.example(2)).shape == (2, 1000)
    # the bf16 gate export would measure: not here, and one line says why
    why = gate_bf16_where_native(small_bundle.path)
    assert isinstance(why, str) and why.startswith("the bf16 gate was not measured: bf16 needs a CPU with native")


def test_a_gated_int8_graph_is_the_default_and_fp32_pins(int8_bundle: Path) -> None:
    with Predictor(int8_bundle) as default, Predictor(int8_bundle, precision="fp32") as pinned:
        assert default.precision == "int8" and default.file in ("model.int8-cpu.onnx", "model.int8.onnx")
        reason = default.precision_choice.reason
        assert reason.startswith("int8, the fastest precision whose gate passed for this bundle here")
        assert f"{default.file}: mean cosine 0." in reason and "speed-up not measured for this bundle" in reason
        assert (pinned.precision, pinned.file) == ("fp32", "model.onnx")
        assert pinned.precision_choice.reason == "fp32: asked for"
        x = pinned.example(4, seed=3)
        assert agreement(pinned.predict(x), default.predict(x)).cosine_mean >= 0.98


def test_a_recorded_speed_up_is_said_and_a_slower_precision_passed_over(int8_bundle: Path, tmp_path: Path) -> None:
    path = _copy(Bundle.open(int8_bundle), tmp_path / "bundle")
    bundle = Bundle.open(path)
    machine = probe_machine()
    key = Predictor(bundle, precision="int8").file
    speed = measure_speedup(bundle, "int8", key, machine, batch=2, runs=2)
    assert speed["device"] == machine.cpu.describe() and speed["backends"]
    for timed in speed["backends"].values():
        assert timed["speedup"] == pytest.approx(speed["fp32_ms"] / timed["ms"], rel=1e-2)
    entry = bundle.stage("precision")[key]
    entry["speed"] = speed
    served = plan(bundle, "auto", "int8", machine).backend  # the fastest timed backend where the gate passed
    assert served in speed["backends"]
    assert speed["backends"][served]["speedup"] == max(t["speedup"] for t in speed["backends"].values())
    choice = choose_precision(bundle, "auto", machine)
    if speed["backends"][served]["speedup"] >= 1:  # the figure measured here decides, and is said
        assert choice.precision == "int8" and f"{speed['backends'][served]['speedup']:.2f}x fp32 at batch 2" in \
            choice.reason
        assert choice.speed is not None and choice.speed["backend"] == served
    else:
        assert choice.precision == "fp32" and "slower than fp32" in choice.reason
    for timed in speed["backends"].values():  # measured slower on this CPU: passed over, saying so
        timed["speedup"] = 0.8
    slower = choose_precision(bundle, "auto", machine)
    assert slower.precision == "fp32" and "int8: its gate passed, but 0.80x fp32 at batch 2" in slower.reason
    entry["speed"] = {**speed, "device": "Some Other CPU (avx512_bf16)"}  # measured elsewhere: no figure said
    elsewhere = choose_precision(bundle, "auto", machine)
    assert elsewhere.precision == "int8" and elsewhere.speed is None
    assert "speed-up not measured on this CPU (measured on Some Other CPU (avx512_bf16))" in elsewhere.reason


def test_quantize_records_the_speed_up_it_measured(small_bundle: Bundle, shared_data: Path, tmp_path: Path) -> None:
    path = _copy(small_bundle, tmp_path / "bundle")
    result = quantize_bundle(QuantizeSettings(bundle=path, precision="int8", target="cpu",
                                             images=shared_data / "imagenet-samples", calib_size=32, holdout_size=16))
    assert result.accuracy.passed, result.accuracy.failures
    entry = Bundle.open(path).stage("precision")["model.int8-cpu.onnx"]
    speed = entry["speed"]
    assert speed["device"] == detect_cpu().describe() and speed["batch"] == 8 and speed["fp32_backend"]
    # every CPU backend where the gate passed is timed, and none where it did not
    passed = {name for name, gate in entry["backends"].items() if gate.get("accuracy", {}).get("passed")}
    assert "ort-cpu" in passed and set(speed["backends"]) == passed
    for timed in speed["backends"].values():
        assert timed["ms"] > 0 and timed["speedup"] == pytest.approx(speed["fp32_ms"] / timed["ms"], rel=1e-2)


@pytest.mark.skipif(not NATIVE_BF16, reason=NO_BF16)
def test_with_native_bf16_export_gates_bf16_and_the_default_serves_it(small_bundle: Bundle, tmp_path: Path) -> None:
    path = _copy(small_bundle, tmp_path / "bundle")
    result = gate_bf16_where_native(path)
    assert not isinstance(result, str) and result.accuracy.passed
    with Predictor(path) as predictor:
        assert (predictor.backend, predictor.precision) == ("openvino", "bf16")
        assert predictor.precision_choice.reason.startswith("bf16, the fastest precision whose gate passed")
    with Predictor(path, precision="fp32") as pinned:
        assert pinned.precision == "fp32"


def test_openvino_int8_float_parts_follow_the_cpu_and_their_gate(small_bundle: Bundle, shared_data: Path,
                                                                  tmp_path: Path) -> None:
    path = _copy(small_bundle, tmp_path / "bundle")
    quantize_bundle(QuantizeSettings(bundle=path, precision="int8", target="tensorrt", images=shared_data /
                                    "imagenet-samples", calib_size=32, holdout_size=16, measure_speed=False))
    bundle = Bundle.open(path)
    entry = bundle.stage("precision")["model.int8.onnx"]
    with OpenVinoBackend(path / "model.int8.onnx", bundle, precision="int8",
                         options=OpenVinoOptions(cache_dir="")) as backend:
        openvino = entry["backends"]["openvino"]
        if NATIVE_BF16:  # quantize judged the bf16 float parts; they are served only if that gate passed
            assert "bf16_float_parts" in openvino
            expected = "bf16" if openvino["bf16_float_parts"]["passed"] else "f32"
        else:
            assert "bf16_float_parts" not in openvino
            expected = "f32"
        assert (backend.int8_float, backend.compiled_precision) == (expected, expected)
        assert f"(int8 graph, float parts {expected})" in backend.description
    assert int8_float_parts(bundle, path / "model.int8.onnx", detect_cpu()) == expected


def test_serve_says_which_precision_it_serves_and_why(int8_bundle: Path, small_bundle: Bundle) -> None:
    with served(int8_bundle) as server:
        lines = [line for line in server.output.splitlines() if line.startswith("precision ")]
        assert lines and lines[0].startswith("precision int8, the fastest precision whose gate passed"), server.output
        index = httpx.get(f"{server.url}/").json()
        assert index["precision"]["precision"] == "int8" and index["precision"]["accuracy"]["passed"]
        metrics = httpx.get(f"{server.url}/metrics").text
        assert 'sk_model_info{backend="' in metrics and 'precision="int8"} 1.0' in metrics
    with served(int8_bundle, "--precision", "fp32") as pinned:
        assert any(line == "precision fp32: asked for" for line in pinned.output.splitlines()), pinned.output
        assert json.loads(httpx.get(f"{pinned.url}/").text)["precision"]["precision"] == "fp32"
    if not NATIVE_BF16:
        with served(small_bundle.path) as plain:
            line = next(line for line in plain.output.splitlines() if line.startswith("precision "))
            assert line.startswith("precision fp32: no faster precision passed its gate") and "native bfloat16" in line


def test_on_a_gpu_a_gated_fp16_graph_is_chosen_and_bf16_never(small_bundle: Bundle, tmp_path: Path) -> None:
    from sk_deploy.machine import Machine

    path = _copy(small_bundle, tmp_path / "bundle")
    result = quantize_bundle(QuantizeSettings(bundle=path, precision="fp16", holdout_size=4, measure_speed=False))
    assert result.accuracy.passed
    gpu = Machine(cuda=True, gpu_name="NVIDIA H100 80GB HBM3", compute_capability=(9, 0),
                  ort_providers=("CUDAExecutionProvider", "CPUExecutionProvider"), tensorrt_version=None,
                  cpu=detect_cpu())  # described, not opened: what auto would pick there
    choice = choose_precision(Bundle.open(path), "auto", gpu)
    assert choice.precision == "fp16" and "model.fp16.onnx: mean cosine" in choice.reason
    assert choice.passed_over[0].startswith("int8: the bundle has no int8 graph")
    assert not any(p.startswith("bf16") for p in choice.passed_over)
    assert choose_precision(small_bundle, "auto", gpu).reason.startswith("fp32: no faster precision")
