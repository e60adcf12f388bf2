"""The backend table is the one home of a backend's facts: a backend added by one entry (``tests.fake_backend``:
ONNX Runtime's CPU provider under another name, a real runnable backend) is taken by ``auto``, measured by
``bench``, listed by ``evaluate --help``, and accepted or refused by ``serve --instances`` as its entry says;
every user of the table asks it rather than keeping a list of its own."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from typer.testing import CliRunner

from sk_deploy.backends import BACKENDS, auto_order, bench_backends, bench_variants, default_bench_backends
from sk_deploy.bench.latency import BenchConfig, BenchRun
from sk_deploy.bundle import Bundle
from sk_deploy.cli import app
from sk_deploy.machine import probe_machine
from sk_deploy.precisions import PRECISIONS, Precision
from sk_deploy.runtime.instances import instance_options, instances_refusal
from sk_deploy.runtime.predictor import Predictor, auto_candidates, plan
from tests.fake_backend import FAKE, OrtFakeBackend
from tests.servers import served

runner = CliRunner()


@pytest.fixture()
def fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The fake backend's one entry in the table, for this test."""
    monkeypatch.setitem(BACKENDS, FAKE.name, FAKE)
    yield


def cli_with_fake(*args: str) -> subprocess.CompletedProcess[str]:
    """The command line in a process of its own whose table has the fake entry."""
    return subprocess.run([sys.executable, "-m", "tests.fake_backend", *args], capture_output=True, text=True,
                          timeout=300, env={**__import__("os").environ, "COLUMNS": "200"})


def test_auto_takes_the_new_backend_at_its_place(small_bundle: Bundle, fake: None) -> None:
    assert auto_order()[0].name == FAKE.name  # place -1: before tensorrt
    machine = probe_machine()
    choice = plan(small_bundle, "auto", "fp32", machine)
    assert (choice.backend, choice.file) == (FAKE.name, "model.onnx") and FAKE.about in choice.reason
    assert auto_candidates(small_bundle, "fp32", machine)[0].backend == FAKE.name
    batch = small_bundle.input_spec.example(3, seed=1)
    with Predictor(small_bundle, "auto", "fp32") as chosen, Predictor(small_bundle, "ort-cpu", "fp32") as plain:
        assert chosen.backend == FAKE.name and isinstance(chosen._runner, OrtFakeBackend)
        np.testing.assert_allclose(chosen.predict(batch), plain.predict(batch), atol=1e-5)


def test_auto_no_longer_takes_it_without_its_entry(small_bundle: Bundle) -> None:
    assert FAKE.name not in BACKENDS
    assert plan(small_bundle, "auto", "fp32", probe_machine()).backend in ("openvino", "ort-cpu")


def test_bench_measures_the_new_backend(small_bundle: Bundle, fake: None) -> None:
    assert FAKE.name in default_bench_backends() and bench_variants()[FAKE.name].backend == FAKE.name
    assert FAKE.name in bench_backends("cpu", "fp32") and FAKE.name not in bench_backends("gpu", "fp32")
    config = BenchConfig(backends=(FAKE.name,), precisions=("fp32",), batches=(2,), warmup_s=0.0,
                         duration_s=0.05, min_runs=2, max_runs=5)
    run = BenchRun(small_bundle, config)
    rows = run.execute()
    fake_rows = [row for row in rows if row.backend == FAKE.name]
    assert len(fake_rows) == 1 and fake_rows[0].status == "ok", [r.reason for r in fake_rows]
    assert fake_rows[0].file == "model.onnx" and fake_rows[0].device == "cpu" and fake_rows[0].runs >= 2
    assert rows[0].backend == "torch"  # the baseline, measured in the same run


def test_evaluate_help_lists_the_new_backend() -> None:
    with_fake = cli_with_fake("evaluate", "--help")
    assert with_fake.returncode == 0, with_fake.stderr
    assert FAKE.name in with_fake.stdout and "openvino" in with_fake.stdout
    plain = runner.invoke(app, ["evaluate", "--help"], env={"COLUMNS": "200"})
    assert plain.exit_code == 0 and FAKE.name not in plain.output and "openvino" in plain.output


def test_serve_runs_several_instances_of_it(small_bundle: Bundle) -> None:
    assert FAKE.parallel  # the entry's default: several instances, each with its share of the cores
    with served(small_bundle.path, "--backend", FAKE.name, "--instances", "2", module="tests.fake_backend") as server:
        assert f"on {FAKE.name} fp32" in server.output
        picture = small_bundle.input_spec.example(1, seed=2)
        body = {"inputs": [{"name": small_bundle.input_spec.name, "shape": list(picture.shape), "datatype": "FP32",
                            "data": picture.ravel().tolist()}]}
        answer = httpx.post(f"{server.url}/v2/models/{small_bundle.model_name}/infer", json=body, timeout=60,
                            trust_env=False)
        assert answer.status_code == 200, answer.text
        with Predictor(small_bundle, "ort-cpu") as plain:
            logits = np.asarray(answer.json()["outputs"][0]["data"], dtype=np.float32)
            np.testing.assert_allclose(logits, plain.predict(picture).ravel(), atol=1e-4)


def test_serve_refuses_instances_where_its_entry_says_one(small_bundle: Bundle,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    one = dataclasses.replace(FAKE, one_instance="its sessions share one fake device")
    monkeypatch.setitem(BACKENDS, one.name, one)
    assert instances_refusal(one.name) == one.one_instance
    assert "ort" in instance_options("fp32", 2, cores=2)  # the other ONNX Runtime backends still share cores
    result = runner.invoke(app, ["serve", str(small_bundle.path), "--backend", one.name, "--instances", "2",
                                 "--port", "0"])
    assert result.exit_code == 1
    assert f"--instances 2: {one.name} runs one instance (its sessions share one fake device)" in result.output


def test_precisions_are_facts_not_names() -> None:
    assert [str(p) for p in PRECISIONS] == ["fp32", "fp16", "int8", "bf16", "tf32"]
    hints = [p for p in PRECISIONS if p.hint]
    assert hints == [Precision.BF16, Precision.TF32] and all(p.graph == "fp32" for p in hints)
    assert [p for p in PRECISIONS if p.gated] == [Precision.FP16, Precision.INT8, Precision.BF16]
    # which backends run each precision comes from the table alone
    assert [name for name, spec in BACKENDS.items() if Precision.BF16 in spec.precisions] == ["openvino"]
    assert [name for name, spec in BACKENDS.items() if not spec.parallel] == ["tensorrt", "ort-tensorrt",
                                                                                "ort-cuda", "torch"]
