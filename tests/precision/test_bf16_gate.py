"""`sk-deploy quantize BUNDLE --precision bf16`: bf16 against fp32 on held-out photos through the fp16/int8 gate
code, figures recorded in the manifest and no file added; then predict names the faster precision in one line.
Where the CPU lacks native bfloat16, the refusal is one line and the bundle is unchanged."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sk_deploy.bundle import Bundle
from sk_deploy.cli import app
from sk_deploy.machine import detect_cpu
from sk_deploy.precisions import Precision
from tests.conftest import make_image
from tests.test_cli import sk_deploy

pytest.importorskip("openvino", reason="OpenVINO is a default dependency; this install lacks it")
runner = CliRunner()
REFUSAL = Precision.BF16.cpu_refusal(detect_cpu())


@pytest.fixture()
def bundle_dir(small_bundle: Bundle, tmp_path: Path) -> Path:
    path = tmp_path / "bundle"
    shutil.copytree(small_bundle.path, path)
    return path


@pytest.fixture()
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(6):
        make_image(folder / f"p{i}.jpg", size=(120, 100), seed=i)
    return folder


@pytest.mark.skipif(REFUSAL is not None, reason=f"no native bf16 on this CPU: {REFUSAL}")
def test_bf16_gate_records_figures_and_no_file(bundle_dir: Path, photos: Path) -> None:
    files_before = sorted(p.name for p in bundle_dir.iterdir())
    # the same held-out split as int8's (calibration photos unused), so the precisions compare on the same photos
    result = runner.invoke(app, ["quantize", str(bundle_dir), "--precision", "bf16", "--images", str(photos),
                                 "--calib-size", "2", "--holdout-size", "4"])
    assert result.exit_code == 0, result.output
    assert "recorded" in result.output and "--precision bf16" in result.output
    assert sorted(p.name for p in bundle_dir.iterdir()) == files_before  # no file: bf16 compiles model.onnx
    entry = json.loads((bundle_dir / "manifest.json").read_text())["stages"]["precision"]["bf16"]
    accuracy = entry["accuracy"]
    assert accuracy["passed"] and accuracy["precision"] == "bf16" and accuracy["gate"]["min_cosine"] == 0.999
    assert 0.999 <= accuracy["cosine_mean"] < 1.0  # bf16 ran: close to fp32, not equal to it
    assert entry["holdout"]["images"] == 4 and entry["bf16"]["compiled_precision"] == "bf16"
    run = sk_deploy("predict", str(photos / "p0.jpg"), "--bundle", str(bundle_dir), "--backend", "openvino",
                    "--precision", "fp32")  # pinned: the tip names the faster precision auto would have taken
    assert run.returncode == 0, run.stderr
    tips = [line for line in run.stderr.splitlines() if line.startswith("tip:")]
    assert len(tips) == 1 and tips[0].startswith("tip: --precision bf16 runs faster")
    chosen = sk_deploy("predict", str(photos / "p0.jpg"), "--bundle", str(bundle_dir))  # auto: bf16 by default,
    assert chosen.returncode == 0, chosen.stderr  # unless the speed-up quantize measured here says it is slower
    assert ("openvino, bf16" in chosen.stdout and "precision bf16, the fastest precision whose gate passed"
            in chosen.stderr) or "bf16: its gate passed, but" in chosen.stderr, chosen.stderr
    served = sk_deploy("predict", str(photos / "p0.jpg"), "--bundle", str(bundle_dir), "--precision", "bf16")
    assert served.returncode == 0 and "openvino, bf16" in served.stdout and "tip:" not in served.stderr


def test_bf16_refusals_are_one_line_and_leave_the_bundle(bundle_dir: Path, photos: Path) -> None:
    manifest = (bundle_dir / "manifest.json").read_text()
    result = runner.invoke(app, ["quantize", str(bundle_dir), "--precision", "bf16", "--exclude", "Conv"])
    assert result.exit_code == 1 and "--exclude keeps nodes float32" in result.output
    if REFUSAL is not None:  # this CPU: the real refusal
        result = runner.invoke(app, ["quantize", str(bundle_dir), "--precision", "bf16", "--images", str(photos)])
        assert result.exit_code == 1 and "native bfloat16" in result.output
    assert (bundle_dir / "manifest.json").read_text() == manifest
