"""``sk-deploy export``, ``verify`` and ``inspect`` as a user runs them, and their refusals of bad input:
one line on stderr, exit code 1, nothing half-written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from sk_deploy.cli import app
from sk_deploy.models import create_model
from tests.graph.conftest import REPO_ROOT

SMALL = ["skresnet18", "--exporter", "legacy", "--input-size", "64", "64"]


def sk_deploy(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sk_deploy`` from this checkout in a fresh process."""
    env = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "sk_deploy", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def invoke(*args: str):
    """Run a command in this process (fast; for the refusals)."""
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "200"})


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "bundle"
    run = sk_deploy("export", *SMALL, "--out", str(out), "--batch-profile", "1:4:8")
    assert run.returncode == 0, run.stderr
    assert "random weights" in run.stderr
    assert "model.raw.onnx" in run.stdout and "model.onnx" in run.stdout
    assert "SK select blocks rewritten: 8, skipped: 0" in run.stdout
    assert "pass" in run.stdout and "FAIL" not in run.stdout
    return out


def test_export_writes_a_verified_bundle(exported: Path) -> None:
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["input"]["batch"] == {"min": 1, "opt": 4, "max": 8}
    assert manifest["stages"]["verify"]["passed"]
    assert manifest["model"]["weights"] == {"source": "random", "seed": 0}


def test_verify_command(exported: Path) -> None:
    run = sk_deploy("verify", str(exported))
    assert run.returncode == 0, run.stderr
    assert "model.onnx" in run.stdout and "pass" in run.stdout
    result = invoke("verify", str(exported), "--max-abs", "0")
    assert result.exit_code == 1 and "verification failed" in result.stderr and "FAIL" in result.stdout


def test_verify_on_real_photos_command(exported: Path, shared_data: Path) -> None:
    result = invoke("verify", str(exported), "--images", str(shared_data / "imagenet-samples"), "--limit", "4")
    assert result.exit_code == 0, result.output
    assert "4 images" in result.stdout
    manifest = json.loads((exported / "manifest.json").read_text())
    assert manifest["stages"]["verify"]["images"].endswith("imagenet-samples")


def test_inspect_bundle_and_file(exported: Path) -> None:
    result = invoke("inspect", str(exported))
    assert result.exit_code == 0, result.output
    for text in ("model.raw.onnx", "model.onnx", "Softmax", "Sigmoid", "GlobalAveragePool", "total", "batch"):
        assert text in result.stdout
    result = invoke("inspect", str(exported / "model.onnx"), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)["files"]["model.onnx"]
    assert summary["inputs"] == [{"name": "input", "shape": ["batch", 3, 64, 64], "dtype": "float32"}]
    assert summary["outputs"] == [{"name": "logits", "shape": ["batch", 1000], "dtype": "float32"}]
    assert summary["rank5_tensors"] == 0 and "Softmax" not in summary["ops"] and summary["bytes"] > 1e6
    result = invoke("inspect", str(exported), "--json")
    files = json.loads(result.stdout)["files"]
    assert files["model.onnx"]["nodes"] < files["model.raw.onnx"]["nodes"]
    assert files["model.raw.onnx"]["ops"]["Softmax"] == 8


def test_existing_bundle_is_refused_then_replaced_with_force(exported: Path) -> None:
    result = invoke("export", *SMALL, "--out", str(exported), "--no-verify")
    assert result.exit_code == 1 and "not empty; pass --force" in result.stderr
    before = (exported / "model.onnx").stat().st_mtime_ns
    result = invoke("export", *SMALL, "--out", str(exported), "--force", "--no-verify")
    assert result.exit_code == 0, result.output
    assert (exported / "model.onnx").stat().st_mtime_ns != before
    assert "verify" not in json.loads((exported / "manifest.json").read_text())["stages"]
    assert sorted(p.name for p in exported.parent.iterdir()) == ["bundle"]


@pytest.fixture(scope="module")
def wrong_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A skresnet18 checkpoint with one key missing and one extra: it fits no model."""
    state = {k: v.contiguous() for k, v in create_model("skresnet18").state_dict().items()}
    state.pop("fc.bias")
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path_factory.mktemp("weights") / "wrong.safetensors"
    save_file(state, str(path))
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sknet51"], "unknown model 'sknet51'; known models: sknet26, sknet50"),
        ([*SMALL, "--weights", "WRONG"], "1 missing: fc.bias; 1 unexpected: extra.weight"),
        ([*SMALL, "--weights", "absent.safetensors"], "absent.safetensors: no such checkpoint file"),
        ([*SMALL, "--batch-profile", "8:1:4"], "must satisfy 1 <= MIN <= OPT <= MAX"),
        (["skresnet18", "--input-size", "64", "96"], "only square inputs"),
        ([*SMALL, "--out", "FILE"], "exists and is not a directory"),
        ([*SMALL, "--out", "FILE/bundle"], "cannot write there"),
        ([*SMALL, "--images", "FILE"], "file: not a directory"),
    ],
    ids=["unknown-model", "mismatched-weights", "missing-weights", "batch", "non-square",
         "out-is-file", "unwritable", "images-not-a-folder"],
)
def test_export_refusals(args: list[str], message: str, tmp_path: Path, wrong_weights: Path) -> None:
    (tmp_path / "file").write_text("x")
    args = [str(wrong_weights) if a == "WRONG" else a.replace("FILE", str(tmp_path / "file")) for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "bundle")]
    result = invoke("export", *args)
    assert result.exit_code == 1, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]  # nothing written


def test_refusal_exits_one_in_a_real_process(tmp_path: Path) -> None:
    run = sk_deploy("export", "sknet51", "--out", str(tmp_path / "b"))
    assert run.returncode == 1 and "known models: sknet26" in run.stderr and "Traceback" not in run.stderr
    assert list(tmp_path.iterdir()) == []


def test_verify_and_inspect_refusals(tmp_path: Path) -> None:
    result = invoke("verify", str(tmp_path))
    assert result.exit_code == 1 and "not a bundle (no manifest.json)" in result.stderr
    result = invoke("verify", str(tmp_path / "absent"))
    assert result.exit_code == 1 and "no such directory" in result.stderr
    result = invoke("inspect", str(tmp_path / "absent.onnx"))
    assert result.exit_code == 1 and "no such file or bundle directory" in result.stderr


def test_inspect_refuses_a_file_that_is_not_onnx(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"\x00garbage\xff" * 10)
    result = invoke("inspect", str(tmp_path / "model.onnx"))
    assert result.exit_code == 1 and "not a readable ONNX model" in result.stderr
