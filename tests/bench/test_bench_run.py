"""A real benchmark of the small skresnet18 bundle (PyTorch eager, ONNX Runtime on the cleaned and the raw
graph) with very short durations: every measured row carries percentiles, throughput and its ratio to the
eager float32 baseline of the same batch; what this machine or bundle cannot run is a skipped row with its
reason; the JSON, CSV, Markdown and PNG files say the same."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import onnxruntime
import pytest
import torch
from PIL import Image

from sk_deploy.bench.latency import BenchConfig, BenchError, BenchRun, Runner
from sk_deploy.bench.plots import PLOTS, PlotsUnavailable, write_plots
from sk_deploy.bench.report import STATS, build_report, to_csv, to_markdown, write_report
from sk_deploy.bundle import Bundle
from sk_deploy.machine import BackendUnavailable
from sk_deploy.runtime.predictor import Predictor

#: ONNX Runtime's CUDA provider works here (installed, and a GPU): its rows are measured, not skipped
CUDA_ORT = torch.cuda.is_available() and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
CONFIG = BenchConfig(backends=("ort-cpu", "ort-cpu-raw", "torch", "ort-cuda"), precisions=("fp32", "int8"),
                     batches=(1, 2), warmup_s=0.02, duration_s=0.1, min_runs=3)


@pytest.fixture(scope="module")
def bench(small_bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, BenchRun]:
    """One short run and its report files."""
    run = BenchRun(small_bundle, CONFIG)
    seen: list[tuple[str, int]] = []
    run.execute(on_row=lambda row, cells: seen.append((row.label, cells)))
    assert sum(cells for _, cells in seen) == run.planned  # progress accounts for every cell
    report = build_report(run, "sk-deploy bench (test)")
    out = tmp_path_factory.mktemp("bench")
    write_report(report, out)
    return report, out, run


def rows_by(report: dict[str, Any]) -> dict[tuple[str, str, int | None], dict[str, Any]]:
    return {(r["backend"], r["precision"], r["batch"]): r for r in report["rows"]}


def test_measured_rows_carry_percentiles_throughput_and_ratio(bench: tuple) -> None:
    report, _, _ = bench
    rows = rows_by(report)
    measured = [r for r in report["rows"] if r["status"] == "ok"]
    expected = ("torch", "ort-cpu", "ort-cpu-raw", *(("ort-cuda",) if CUDA_ORT else ()))
    assert {(r["backend"], r["batch"]) for r in measured} == {(b, n) for b in expected for n in (1, 2)}
    assert report["rows"][0]["backend"] == "torch" and report["rows"][0]["baseline"]  # the baseline runs first
    for r in measured:
        lat = r["latency_ms"]
        values = [lat[s] for s in ("min", "p50", "p90", "p95", "p99", "max")]
        assert values == sorted(values) and lat["min"] > 0 and lat["min"] <= lat["mean"] <= lat["max"]
        assert lat["n"] == r["runs"] >= CONFIG.min_runs
        assert r["images_per_s"] == pytest.approx(r["batch"] * r["runs"] / r["seconds"], rel=0.01)
        base = rows[("torch", "fp32", r["batch"])]
        assert r["vs_baseline"]["speedup_p50"] == pytest.approx(base["latency_ms"]["p50"] / lat["p50"], rel=1e-3)
        assert r["vs_baseline"]["throughput"] == pytest.approx(r["images_per_s"] / base["images_per_s"], rel=1e-3)
        on_gpu = r["backend"] == "ort-cuda" or (r["backend"] == "torch" and torch.cuda.is_available())
        assert r["device"] == ("cuda" if on_gpu else "cpu") and r["timing"] == "host-to-host"
        if on_gpu:  # the device's peak during the row, whole-device, and a device-resident figure beside it
            assert r["gpu_device_peak_mb"] > 0 and r["gpu_memory_source"] in ("nvml", "cudaMemGetInfo")
            assert r["device_resident_ms"]["p50"] > 0
        else:
            assert r["gpu_device_peak_mb"] is None and r["device_resident_ms"] is None
        assert r["peak_rss_mb"] is None or r["peak_rss_mb"] > 50
    assert rows[("torch", "fp32", 1)]["vs_baseline"] == {"speedup_p50": 1.0, "throughput": 1.0}
    assert rows[("ort-cpu", "fp32", 1)]["file"] == "model.onnx"
    assert rows[("ort-cpu-raw", "fp32", 2)]["file"] == "model.raw.onnx"
    if not torch.cuda.is_available():
        assert rows[("ort-cpu", "fp32", 2)]["device_ms"] is None
        assert rows[("ort-cpu", "fp32", 2)]["split_note"].startswith("not applicable")
    assert report["complete"] and not report["interrupted"]


def test_skipped_rows_say_why(bench: tuple) -> None:
    report, _, _ = bench
    reasons = {(r["backend"], r["precision"]): r["reason"] for r in report["rows"] if r["status"] == "skipped"}
    assert "runs fp32" in reasons[("torch", "int8")]
    assert "no int8 graph" in reasons[("ort-cpu", "int8")] and "sk-deploy quantize" in reasons[("ort-cpu", "int8")]
    assert "fp32 only" in reasons[("ort-cpu-raw", "int8")]
    if not torch.cuda.is_available():
        assert "NVIDIA GPU" in reasons[("ort-cuda", "fp32")]
    assert all(r and "\n" not in r for r in reasons.values())


def test_csv_and_markdown_hold_the_same_rows(bench: tuple) -> None:
    report, out, _ = bench
    assert json.loads((out / "bench.json").read_text()) == json.loads(json.dumps(report))
    with open(out / "bench.csv", newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == len(report["rows"])
    for line, row in zip(table, report["rows"], strict=True):
        assert (line["backend"], line["precision"], line["status"]) == (row["backend"], row["precision"], row["status"])
        if row["status"] == "ok":
            assert float(line["latency_p99_ms"]) == row["latency_ms"]["p99"]
            assert float(line["speedup_p50_vs_baseline"]) == row["vs_baseline"]["speedup_p50"]
        else:
            assert line["reason"] == row["reason"] and line["latency_p50_ms"] == ""
    markdown = (out / "bench.md").read_text()
    assert "| backend | precision | batch | runs |" in markdown and "## Skipped" in markdown
    assert markdown.count("\n| ort-cpu-raw | fp32 |") == 2
    assert "torch int8: the torch backend runs fp32" in markdown
    assert "![latency_vs_batch](latency_vs_batch.png)" in markdown
    assert "Reproduce: `sk-deploy bench (test)`" in markdown and "complete" in markdown


def test_plots_are_real_pictures(bench: tuple) -> None:
    pytest.importorskip("matplotlib")
    _, out, _ = bench
    for name in PLOTS.values():
        with Image.open(out / name) as picture:
            assert picture.format == "PNG" and picture.size == (880, 550)
            colours = picture.convert("RGB").getcolors(1 << 20)
            assert colours is not None and len(colours) > 50  # lines, labels and anti-aliasing, not a blank canvas


def test_without_matplotlib_plots_are_skipped_in_one_line(bench: tuple, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    report, _, _ = bench
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # what an absent package looks like to import
    with pytest.raises(PlotsUnavailable, match=r"pip install 'sk-deploy\[bench\]'"):
        write_plots(report, tmp_path)
    written, why = write_report(report, tmp_path)
    assert why and "matplotlib" in why and [p.name for p in written] == ["bench.json", "bench.csv", "bench.md"]
    assert "![" not in (tmp_path / "bench.md").read_text()


def test_a_backend_failing_mid_run_is_a_skipped_row(bench: tuple) -> None:
    _, _, run = bench

    def broken(batch: object) -> None:
        raise RuntimeError("backend compiler failed: no C compiler\nlong traceback")

    runner = Runner("torch-compile", "fp32", None, "cpu", broken, lambda n: torch.zeros(n).numpy(), lambda: None)
    row = run._measure(runner, 4, is_baseline=False)
    assert row.status == "skipped" and row.batch == 4
    assert row.reason == "failed: backend compiler failed: no C compiler"


def test_bad_configurations_are_refused(small_bundle: Bundle) -> None:
    with pytest.raises(BenchError, match="unknown backend 'onnx'"):
        BenchRun(small_bundle, BenchConfig(backends=("onnx",)))
    with pytest.raises(BenchError, match="unknown precision 'int4'"):
        BenchRun(small_bundle, BenchConfig(precisions=("int4",)))
    with pytest.raises(BenchError, match="batch sizes must be 1 or more"):
        BenchRun(small_bundle, BenchConfig(batches=(0,)))


def test_markdown_of_a_partial_report_says_so(bench: tuple) -> None:
    _, _, run = bench
    report = build_report(run, "sk-deploy bench (test)", interrupted=True)
    assert not report["complete"] and report["notes"][0].startswith("interrupted")
    assert "partial: interrupted" in to_markdown(report)
    assert to_csv(report).count("\n") == len(report["rows"]) + 1
    assert set(STATS) <= set(report["rows"][0]["latency_ms"])


def test_predictor_device_split_on_this_machine(small_bundle: Bundle) -> None:
    with Predictor(small_bundle, "ort-cpu") as predictor:
        assert not predictor.device_timing
        with pytest.raises(BackendUnavailable, match="no device-side split"):
            predictor.predict_timed(predictor.example(1))


@pytest.mark.gpu
def test_torch_on_cuda_splits_a_run_by_cuda_events(small_bundle: Bundle) -> None:
    with Predictor(small_bundle, "torch") as predictor:
        assert predictor.device_timing
        batch = predictor.example(4)
        logits, phases = predictor.predict_timed(batch)
        assert set(phases) == {"h2d", "compute", "d2h"} and all(v > 0 for v in phases.values())
        assert logits.shape == (4, 1000)
        assert torch.allclose(torch.from_numpy(logits), torch.from_numpy(predictor.predict(batch)), atol=1e-4)
