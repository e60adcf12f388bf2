"""``sk-deploy run`` end to end on a small input and a few generated photos: the bundle, its INT8 graph and the
report; a re-run at once redoes nothing; a new INT8 calibration count redoes only the INT8 stages and the report."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from sk_deploy.bundle import Bundle
from sk_deploy.cli import app
from sk_deploy.compare import generated_images
from sk_deploy.recipe.run import RecipeRun
from sk_deploy.recipe.schema import load_recipe

RECIPE = Path(__file__).resolve().parents[2] / "export" / "skresnet18-cpu.toml"
SMALL = ["export.input_size=64", "export.exporter=legacy", "export.recompute_bn_count=8", "calibration.calib_size=8",
         "calibration.holdout_size=4", "evaluate.limit=6", "bench.batch_sizes=[2]", "bench.warmup_ms=0",
         "bench.duration_ms=0"]
INT8 = {"int8-cpu: quantize", "int8-cpu: evaluate", "int8-cpu: bench", "report"}


def _photos(folder: Path, count: int = 14) -> Path:
    folder.mkdir()
    for i, data in enumerate(generated_images(count)):
        (folder / f"photo{i:02d}.png").write_bytes(data)
    (folder / "labels.csv").write_text("".join(f"photo{i:02d}.png,{i * 7}\n" for i in range(count)))
    return folder


def _run(out: Path, photos: Path, *extra: str) -> dict[str, str]:
    recipe = load_recipe(RECIPE, [f"calibration.images={photos}", *SMALL, *extra])
    return {r.name: r.status for r in RecipeRun(recipe, out).execute()}


def test_run_then_rerun_then_change_the_int8_count(tmp_path: Path) -> None:
    photos, out = _photos(tmp_path / "photos"), tmp_path / "bundle"
    first = _run(out, photos)
    assert first == {"export": "done", "verify": "done", "fp32: evaluate": "done", "fp32: bench": "done",
                     "int8-cpu: quantize": "done", "int8-cpu: evaluate": "done", "int8-cpu: bench": "done",
                     "report": "done"}
    bundle = Bundle.open(out)
    assert bundle.has("model.int8-cpu.onnx") and bundle.has("report.md") and bundle.has("report.json")
    report = json.loads((out / "report.json").read_text())
    rows = {(r["file"], r["backend"]) for r in report["rows"]}
    # a CPU recipe benchmarks every CPU backend of the table, OpenVINO (the fastest CPU path) included
    assert rows == {("PyTorch eager", "torch"), ("model.onnx", "ort-cpu"), ("model.int8-cpu.onnx", "ort-cpu"),
                    ("model.onnx", "openvino"), ("model.int8-cpu.onnx", "openvino")}
    assert report["accuracy"] == {**report["accuracy"], "labelled": True, "meaningful": False, "count": 6}
    int8 = next(r for r in report["rows"] if r["file"] == "model.int8-cpu.onnx")
    assert int8["bytes"] == bundle.entry("model.int8-cpu.onnx")["bytes"] and int8["batches"]["2"]["p50_ms"] > 0
    assert "| model.int8-cpu.onnx | int8-cpu | ort-cpu |" in (out / "report.md").read_text()

    again = CliRunner().invoke(app, ["run", str(RECIPE), "--out", str(out), "--set", f"calibration.images={photos}",
                                     *[a for s in SMALL for a in ("--set", s)]], env={"COLUMNS": "200"})
    assert again.exit_code == 0, again.output
    assert "nothing to redo: every stage's inputs are unchanged" in again.output
    assert again.output.count("unchanged") >= len(first)

    changed = _run(out, photos, "calibration.calib_size=6")
    assert {name for name, status in changed.items() if status == "done"} == INT8
    assert {status for name, status in changed.items() if name not in INT8} == {"unchanged"}
    bundle = Bundle.open(out)
    assert bundle.stage("precision")["model.int8-cpu.onnx"]["calibration"]["images"] == 6


def test_a_non_bundle_directory_is_not_replaced(tmp_path: Path) -> None:
    photos, out = _photos(tmp_path / "photos", 3), tmp_path / "keep"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    result = CliRunner().invoke(app, ["run", str(RECIPE), "--out", str(out), "--set", f"calibration.images={photos}"])
    assert result.exit_code == 1 and "directory is not empty" in result.output
    assert (out / "notes.txt").read_text() == "mine"


def test_gpu_recipe_says_what_this_machine_cannot_run(tmp_path: Path) -> None:
    from sk_deploy.machine import probe_machine, tensorrt_version

    photos = _photos(tmp_path / "photos", 8)
    sets = [f"calibration.images={photos}", *SMALL, "precisions.int8.gate=false", "calibration.method=minmax"]
    recipe = load_recipe(RECIPE.with_name("skresnet18-gpu.toml"), sets)
    results = {r.name: r for r in RecipeRun(recipe, tmp_path / "gpu").execute()}
    assert {"fp16: quantize", "int8: quantize", "fp32: build", "fp16: build", "int8: build", "report"} <= set(results)
    if tensorrt_version() is None:
        assert {results[f"{p}: build"].status for p in ("fp32", "fp16", "int8")} == {"skipped"}
        assert "TensorRT is not installed" in results["int8: build"].reason
    if not probe_machine().cuda:
        assert results["int8: bench"].status == "skipped" and "need an NVIDIA GPU" in results["int8: bench"].reason
    assert results["report"].status == "done"
