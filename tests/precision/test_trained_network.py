"""Accuracy on a trained network from a third party (tests/trained.py): EfficientNet-Lite0, exported by torch's
legacy exporter, brought in with ``sk-deploy import``; every precision on every backend that runs here against
the labels of real ImageNet photos and against float32; the gates hold for the graphs they pass and refuse the
one that misses; ``--auto-exclude`` finds the layers to keep float on both INT8 forms."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import onnx
import pytest
from typer.testing import CliRunner

from sk_deploy.bundle import Bundle
from sk_deploy.cli import app
from sk_deploy.evaluate import EvaluateReport, evaluate_bundle
from sk_deploy.machine import probe_machine
from sk_deploy.precision import accuracy
from sk_deploy.precision.sensitivity import quantized_layers
from tests import trained

runner = CliRunner()
EVALUATED = 250
"""Labelled photos evaluated in the suite (the benchmark takes all 1300: benchmarks/trained)."""
HOLDOUT = ["--calib-size", "128", "--holdout-size", "48", "--no-measure-speed"]
"""The speed-ups are the benchmark's to measure (benchmarks/trained, benchmarks/default_path); here the gates."""
SEARCH = ["--calib-size", "48", "--holdout-size", "16", "--no-measure-speed"]
"""The TensorRT form's search, which proves it runs on this graph (ONNX Runtime runs that form at a fifth of
float32's speed on a CPU without VNNI: 16 held-out pictures an evaluation, not 48)."""


@dataclass
class Trained:
    bundle: Bundle
    calibration: Path
    refused: object
    searched: object
    report: EvaluateReport


def _invoke(*args: str) -> object:
    result = runner.invoke(app, [str(a) for a in args])
    assert "Traceback" not in result.output, result.output
    return result


@pytest.fixture(scope="module")
def lite0(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """The import, its fp16 and both INT8 graphs (the CPU form refused first, then through --auto-exclude), and
    every served precision evaluated on EVALUATED labelled photos: made once for the module."""
    why = trained.missing()
    if why:
        pytest.skip(why)
    folder = tmp_path_factory.mktemp("lite0")
    photos = shared_data / trained.PHOTOS
    calibration = trained.calibration_folder(photos, folder / "calibration")
    source = trained.export_trained(folder / "efficientnet-lite0.onnx")
    out = folder / "bundle"
    result = _invoke("import", source, "--out", out, "--preprocess", "inception")
    assert result.exit_code == 0, result.output
    _invoke("quantize", out, "--precision", "fp16", "--images", calibration, *HOLDOUT)
    result = _invoke("quantize", out, "--precision", "int8", "--target", "tensorrt", "--images", calibration, *HOLDOUT)
    assert result.exit_code == 0, result.output
    refused = _invoke("quantize", out, "--precision", "int8", "--target", "cpu", "--images", calibration, *HOLDOUT)
    searched = _invoke("quantize", out, "--precision", "int8", "--target", "cpu", "--images", calibration, *HOLDOUT,
                       "--auto-exclude")
    bundle = Bundle.open(out)
    report = evaluate_bundle(bundle, photos, photos / "labels.csv", limit=EVALUATED)
    return Trained(Bundle.open(out), calibration, refused, searched, report)


def test_the_cpu_int8_form_is_refused_by_its_gate(lite0: Trained) -> None:
    refused = lite0.refused
    assert refused.exit_code == 1  # type: ignore[attr-defined]
    assert "model.int8-cpu.onnx misses its accuracy gate" in refused.output  # type: ignore[attr-defined]
    assert "not added to the bundle" in refused.output  # type: ignore[attr-defined]


def test_auto_exclude_passes_the_cpu_form_naming_onnx_nodes(lite0: Trained) -> None:
    searched = lite0.searched
    assert searched.exit_code == 0, searched.output  # type: ignore[attr-defined]
    record = lite0.bundle.stage("precision")["model.int8-cpu.onnx"]
    search = record["auto_exclude"]
    assert not search["start"]["passed"] and search["passed"] and record["accuracy"]["passed"]
    excluded = search["excluded"]
    assert 0 < len(excluded) < search["candidates"] and search["evaluations"] < search["candidates"]
    # a legacy export's weights are called onnx::Conv_N: the layers are named by their ONNX nodes
    assert all(e["layer"] == e["node"] and e["node"].startswith("/_") for e in excluded)
    assert excluded[0]["node"] in searched.output  # type: ignore[attr-defined]
    written = onnx.load(lite0.bundle.path / "model.int8-cpu.onnx")
    assert {e["node"] for e in excluded}.isdisjoint(quantized_layers(written)) and quantized_layers(written)


def test_every_served_precision_against_the_labels(lite0: Trained) -> None:
    report = lite0.report
    assert report.labelled and report.trained and report.count == EVALUATED
    rows = {(r.backend, r.precision): r for r in report.rows}
    served = {"ort-cpu": ("fp16", "int8", "int8-cpu"), "openvino": ("int8", "int8-cpu")}
    for backend, precisions in served.items():
        fp32 = rows[backend, "fp32"]
        assert fp32.top1 > 0.7 and fp32.top5 > 0.9  # trained: 83% top-1 on the 1300 photos (benchmarks/trained)
        for precision in precisions:
            row = rows[backend, precision]
            gate = accuracy.GATES[precision].applied(True)
            # accuracy licenses speed: a graph that passes its gate on the backend that serves it is within
            # 1 point of float32's top-1 there; one that is further off is refused by that gate
            if row.top1 < fp32.top1 - 0.01:
                assert gate.failures(row.agreement), (backend, precision, row.top1, fp32.top1)
            if backend == "ort-cpu":  # where quantize measured the gates: every graph it wrote passes them
                assert not gate.failures(row.agreement) and row.top1 >= fp32.top1 - 0.01, (precision, row.top1)
    bf16 = [s for s in report.skipped if s["precision"] == "bf16"]
    if probe_machine().cpu.native_bf16:
        assert rows["openvino", "bf16"].top1 >= rows["openvino", "fp32"].top1 - 0.01
    else:  # refused, with the reason; never a figure made up
        assert ("openvino", "bf16") not in rows
        assert bf16 and bf16[0]["reason"].startswith("bf16 needs a CPU with native bfloat16")


def test_auto_exclude_on_the_tensorrt_form(lite0: Trained, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    copy = tmp_path / "bundle"
    shutil.copytree(lite0.bundle.path, copy)
    start = lite0.bundle.stage("precision")["model.int8.onnx"]["accuracy"]["cosine_mean"]
    # a gate between the all-int8 figure and 1, which the TensorRT form (passing the default gate) misses
    gate = round(start + (1 - start) / 2, 6)
    monkeypatch.setitem(accuracy.GATES, "int8", accuracy.Gate(min_cosine=gate))
    result = _invoke("quantize", copy, "--precision", "int8", "--target", "tensorrt", "--images", lite0.calibration,
                     *SEARCH, "--auto-exclude")
    search = Bundle.open(copy).stage("precision")["model.int8.onnx"].get("auto_exclude") if result.exit_code == 0 \
        else None
    if result.exit_code == 0:
        assert search is not None and search["passed"] and 0 < len(search["excluded"]) < search["candidates"]
    else:  # it cannot: one line says why
        assert "misses its accuracy gate" in result.output and "--auto-exclude" in result.output


def test_each_backends_recorded_gate_agrees_with_evaluate_and_auto_follows_it(lite0: Trained) -> None:
    from sk_deploy.machine import Machine, parse_cpuinfo
    from sk_deploy.runtime.auto_precision import choose_precision
    from sk_deploy.runtime.predictor import plan

    rows = {(r.backend, r.precision): r for r in lite0.report.rows}
    stages = lite0.bundle.stage("precision")
    judged = 0
    for file, key in (("model.int8.onnx", "int8"), ("model.int8-cpu.onnx", "int8-cpu")):
        for backend, gate in stages[file]["backends"].items():
            if "not_measured" in gate or (backend, key) not in rows:
                continue
            # quantize's gate on its held-out photos and evaluate's on the labelled ones say the same
            evaluated = not accuracy.GATES[key].applied(True).failures(rows[backend, key].agreement)
            assert gate["accuracy"]["passed"] == evaluated, (file, backend, gate["accuracy"]["failures"])
            judged += 1
    assert judged >= 2
    here = probe_machine()
    vnni = parse_cpuinfo("processor\t: 0\nmodel name\t: Xeon\nflags\t\t: avx2 avx512f avx512_vnni amx_int8\n")
    for machine in (here, Machine(cuda=False, gpu_name=None, compute_capability=None, ort_providers=here.ort_providers,
                                  tensorrt_version=None, openvino_version=here.openvino_version, cpu=vnni)):
        choice = choose_precision(lite0.bundle, "auto", machine)
        if choice.precision != "int8":
            continue
        served = plan(lite0.bundle, "auto", "int8", machine)
        # auto never serves int8 on a backend where the gate of the graph it would serve failed
        assert stages[served.file]["backends"][served.backend]["accuracy"]["passed"], (served, choice.reason)
