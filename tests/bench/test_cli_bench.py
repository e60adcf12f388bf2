"""``sk-deploy bench``: files and the table from the command line, one-line refusals, and Ctrl-C on a real
process after its first row leaving a partial report and exit code 130."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from sk_deploy.bundle import Bundle
from sk_deploy.cli import app


def test_bench_writes_every_report(small_bundle: Bundle, tmp_path: Path) -> None:
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["bench", str(small_bundle.path), "--backends", "ort-cpu", "--precisions",
                                      "fp32,fp16", "--batch-sizes", "1", "--warmup-ms", "0", "--duration-ms", "50",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "torch*" in result.output and "ort-cpu" in result.output
    assert "not measured (1 row):\n  ort-cpu fp16: the bundle has no fp16 graph" in result.output
    report = json.loads((out / "bench.json").read_text())
    assert report["complete"] and [r["status"] for r in report["rows"]] == ["ok", "ok", "skipped"]
    assert report["command"].startswith(f"sk-deploy bench {small_bundle.path} --backends ort-cpu")
    assert {p.name for p in out.iterdir()} >= {"bench.json", "bench.csv", "bench.md"}


def test_bench_refuses_in_one_line(small_bundle: Bundle, tmp_path: Path) -> None:
    runner = CliRunner()
    bad = runner.invoke(app, ["bench", str(small_bundle.path), "--backends", "onnx", "--out", str(tmp_path)])
    assert bad.exit_code == 1 and "unknown backend 'onnx'" in bad.output and "Traceback" not in bad.output
    bad = runner.invoke(app, ["bench", str(small_bundle.path), "--batch-sizes", "1,x", "--out", str(tmp_path)])
    assert bad.exit_code == 2 and "--batch-sizes: expected comma-separated int values" in bad.output
    missing = runner.invoke(app, ["bench", str(tmp_path / "nowhere"), "--out", str(tmp_path)])
    assert missing.exit_code == 1 and "nowhere" in missing.output
    assert not list(tmp_path.glob("bench.*"))


def test_ctrl_c_after_the_first_row_leaves_a_partial_report(small_bundle: Bundle, tmp_path: Path) -> None:
    out, log = tmp_path / "partial", tmp_path / "stderr.txt"
    command = [sys.executable, "-m", "sk_deploy", "bench", str(small_bundle.path), "--backends", "torch,ort-cpu",
               "--precisions", "fp32", "--batch-sizes", "1,2,4,8", "--warmup-ms", "0", "--duration-ms", "1000",
               "--out", str(out)]
    env = {**os.environ, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as stderr:
        # started as a script's `sk-deploy bench ... &` starts it: a shell without job control ignores SIGINT in
        # what it runs in the background, and Python keeps that; bench stops on SIGINT all the same
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=stderr, text=True, env=env,
                                   preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
        try:
            deadline = time.monotonic() + 120
            while "done torch fp32 b1" not in log.read_text():
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "no row finished within 120 s"
                time.sleep(0.05)
            process.send_signal(signal.SIGINT)
            stdout, _ = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert process.returncode == 130, log.read_text()
    assert "interrupted: partial report" in log.read_text() and "Traceback" not in log.read_text()
    report = json.loads((out / "bench.json").read_text())
    assert report["interrupted"] and not report["complete"] and report["notes"][0].startswith("interrupted")
    done = [r for r in report["rows"] if r["status"] == "ok"]
    assert 1 <= len(done) < 8 and done[0]["backend"] == "torch" and done[0]["batch"] == 1
    assert done[0]["latency_ms"]["p50"] > 0 and done[0]["vs_baseline"]["speedup_p50"] == 1.0
    assert "partial: interrupted" in (out / "bench.md").read_text()
    assert (out / "bench.csv").read_text().count("\n") == len(report["rows"]) + 1
    assert "torch*" in stdout  # the table of the rows done is still printed
