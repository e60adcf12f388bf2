"""What a user meets off a terminal: every command that prints a table, with stdout piped (a subprocess, no
tty, no COLUMNS), shows every value whole, on a table of long values, and its --json parses; --help shows whole
option names; usage errors are one line; --help, --version and argument errors import no heavy library."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sk_deploy.bundle import Bundle
from tests.servers import ServerProcess

#: no COLUMNS, no TERMINAL_WIDTH: what a pipe, a CI job or a log gets
ENV = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES", "TERMINAL_WIDTH")} | {
    "HF_HUB_OFFLINE": "1"}
LONG = "a-folder-whose-name-is-far-longer-than-any-terminal-is-wide-" + "x" * 90


def piped(*args: str, code: int | None = 0) -> subprocess.CompletedProcess[str]:
    """``sk-deploy ARGS`` with stdout and stderr piped; its exit code checked (unless ``code`` is None)."""
    done = subprocess.run([sys.executable, "-m", "sk_deploy", *args], capture_output=True, text=True, env=ENV,
                          timeout=300)
    assert code is None or done.returncode == code, done.stdout + done.stderr
    return done


def whole(out: str, *values: str) -> None:
    """Nothing cut: no ellipsis anywhere and each long value on one line, unbroken."""
    assert "…" not in out, out
    for value in values:
        assert any(value in line for line in out.splitlines()), f"{value!r} is cut or wrapped in:\n{out}"


@pytest.fixture(scope="module")
def long_bundle(small_bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small bundle in a folder with a long name, and a copy of its graph under a long file name."""
    path = tmp_path_factory.mktemp("long") / LONG
    shutil.copytree(small_bundle.path, path)
    shutil.copy(path / "model.onnx", path.parent / f"{LONG}.onnx")
    return path


@pytest.fixture()
def long_picture(tmp_path: Path) -> Path:
    from tests.conftest import make_image

    return make_image(tmp_path / f"{LONG}.jpg", size=(96, 80))


def test_models_table_and_json() -> None:
    whole(piped("models", "--no-gmacs").stdout, "timm/skresnext50_32x4d.ra_in1k")
    rows = json.loads(piped("models", "--no-gmacs", "--json").stdout)
    assert {r["name"]: r["pretrained"] for r in rows}["sknet50"] == "timm/skresnext50_32x4d.ra_in1k"


def test_predict_table_and_json(long_bundle: Path, long_picture: Path) -> None:
    args = ("predict", str(long_picture), "--bundle", str(long_bundle), "--backend", "ort-cpu", "-k", "3")
    whole(piped(*args).stdout, str(long_picture))
    [result] = json.loads(piped(*args, "--json").stdout)
    assert result["image"] == str(long_picture) and result["file"] == "model.onnx" and len(result["predictions"]) == 3


def test_inspect_table_and_json(long_bundle: Path) -> None:
    graph = long_bundle.parent / f"{LONG}.onnx"
    whole(piped("inspect", str(graph)).stdout, f"{LONG}.onnx")
    assert json.loads(piped("inspect", str(graph), "--json").stdout)["files"]


def test_verify_table_and_json(long_bundle: Path) -> None:
    whole(piped("verify", str(long_bundle)).stdout, "model.onnx")
    report = json.loads(piped("verify", str(long_bundle), "--json").stdout)
    assert "model.onnx" in {f["file"] for f in report["parity"]["files"]}


def test_export_table_and_json(tmp_path: Path) -> None:
    out = tmp_path / LONG
    args = ("export", "skresnet18", "--out", str(out), "--input-size", "64", "64", "--no-verify", "--exporter",
            "legacy")
    whole(piped(*args).stdout, str(out))
    assert "model.onnx" in json.loads(piped(*args, "--force", "--json").stdout)["files"]


def test_quantize_table_and_json(long_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / LONG
    shutil.copytree(long_bundle, copy)
    whole(piped("quantize", str(copy), "--precision", "fp16", "--holdout-size", "4").stdout, "model.fp16.onnx")
    shutil.copytree(long_bundle, copy, dirs_exist_ok=True)
    report = json.loads(piped("quantize", str(copy), "--precision", "fp16", "--holdout-size", "4", "--json").stdout)
    assert report["file"] == "model.fp16.onnx" and report["accuracy"]["agreement"]["cosine_min"] > 0.99


def test_bench_table_and_json(long_bundle: Path, tmp_path: Path) -> None:
    args = ("bench", str(long_bundle), "--backends", "ort-cpu,ort-cuda", "--precisions", "fp32", "--batch-sizes",
            "1", "--warmup-ms", "0", "--duration-ms", "20", "--min-runs", "2", "--no-plots", "--out", str(tmp_path))
    out = piped(*args).stdout
    report = json.loads(piped(*args, "--json").stdout)
    measured = [r["backend"] for r in report["rows"] if r["status"] == "ok"]
    assert measured[:2] == ["torch", "ort-cpu"]
    whole(out, *(f"│ {name}" for name in measured))
    if "ort-cuda" not in measured:  # not measured: listed once, with its reason, in one block
        assert out.count("ort-cuda fp32") == 1 and "  ort-cuda fp32: ort-cuda needs an NVIDIA GPU" in out


def test_bench_http_table_and_json(server: ServerProcess) -> None:
    args = ("bench-http", server.url, "--concurrency", "1", "--duration-ms", "5000", "--max-requests", "5")
    whole(piped(*args).stdout, "sizes", "/v1/classify: closed-loop clients")
    report = json.loads(piped(*args, "--json").stdout)
    assert report["steps"][0]["requests"] == 5


def test_help_shows_whole_option_names_when_piped() -> None:
    out = piped("triton-repo", "--help").stdout
    whole(out, "--preferred-batch-sizes", "--max-queue-delay-ms")
    whole(piped("export", "--help").stdout, "--fuse-preprocess", "--recompute-bn-count")


def test_version() -> None:
    from importlib.metadata import version

    assert piped("--version").stdout.strip() == f"sk-deploy {version('sk-deploy')}"


@pytest.mark.parametrize(("args", "message"), [
    (["predict", "x.jpg", "--top-k", "many"], "Invalid value for '--top-k' / '-k'"),
    (["models", "--colour"], "No such option: --colour"),
    (["exprot"], "No such command 'exprot'"),
])
def test_usage_errors_are_one_line(args: list[str], message: str) -> None:
    done = piped(*args, code=2)
    [line] = done.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line and line.endswith("--help)"), line
    assert done.stdout == ""


HEAVY = ("torch", "onnx", "onnxruntime")


@pytest.mark.parametrize("args", [["--help"], ["--version"], ["serve", "--help"], ["predict", "--top-k", "x"],
                                  ["bench"]])
def test_help_version_and_argument_errors_import_no_heavy_library(args: list[str]) -> None:
    probe = ("import sys\nfrom sk_deploy.cli import app\ntry:\n    app(" + repr(args) + ", prog_name='sk-deploy')\n"
             "except SystemExit:\n    pass\n"
             "print('HEAVY=' + ','.join(m for m in " + repr(HEAVY) + " if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=ENV, timeout=60)
    assert done.stdout.strip().splitlines()[-1] == "HEAVY=", done.stdout + done.stderr


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the answer of a machine with no GPU")
def test_int8_by_default_is_the_form_this_machine_runs(long_bundle: Path, tmp_path: Path) -> None:
    from tests.conftest import make_image

    (tmp_path / "photos").mkdir()
    for i in range(12):
        make_image(tmp_path / "photos" / f"{i}.jpg", size=(96, 80), seed=i)
    copy = tmp_path / "bundle"
    shutil.copytree(long_bundle, copy)
    done = piped("quantize", str(copy), "--precision", "int8", "--images", str(tmp_path / "photos"), "--calib-size",
                 "8", "--holdout-size", "4", "--no-gate", "--json", code=None)
    assert "note: --target auto: the cpu int8 form (no CUDA GPU here" in done.stderr
    assert json.loads(done.stdout)["file"] == "model.int8-cpu.onnx"


def test_a_one_number_batch_profile_is_said_not_silent(tmp_path: Path) -> None:
    done = piped("export", "skresnet18", "--out", str(tmp_path / "b"), "--batch-profile", "8", "--input-size", "32",
                 "32", "--no-verify", "--exporter", "legacy", "--json")
    assert "--batch-profile 8 means 8:8:8" in done.stderr
