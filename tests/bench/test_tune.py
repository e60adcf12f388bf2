"""``sk-deploy tune`` on a 2x1 grid with short steps against real servers: the grid, the choice and the TOML
settings it writes; ``serve --config`` and ``triton-repo --config`` taking them (options given on the command
line winning); ``serve --instances`` where the backend runs several, and refused where it runs one."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc
from typer.testing import CliRunner

from sk_deploy.bundle import Bundle
from sk_deploy.cli import app
from sk_deploy.runtime.instances import instance_options, instances_refusal
from sk_deploy.runtime.predictor import Predictor
from sk_deploy.serving_config import SettingsError, read_settings
from tests.servers import served

runner = CliRunner()


@pytest.fixture(scope="module")
def tuned(small_bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    folder = tmp_path_factory.mktemp("tune")
    result = runner.invoke(app, ["tune", str(small_bundle.path), "--p99-ms", "5000", "--backend", "ort-cpu",
                                 "--max-batch", "1,4", "--max-delay-ms", "1", "--instances", "1", "--duration-ms",
                                 "300", "--finalists", "1", "--out", str(folder / "out"), "--config",
                                 str(folder / "chosen.toml"), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), folder


def test_tune_measures_the_grid_and_writes_the_choice(tuned: tuple[dict, Path]) -> None:
    report, folder = tuned
    grid = report["grid"]
    assert [(c["max_batch"], c["max_delay_ms"], c["instances"]) for c in grid] == [(1, 1.0, 1), (4, 1.0, 1)]
    for candidate in grid:
        assert candidate["status"] == "ok" and candidate["capacity_per_s"] > 0
        assert 1 <= len(candidate["tried"]) <= 4 and candidate["sustained_per_s"] > 0  # a 5 s target is met
        met = [t["offered_per_s"] for t in candidate["tried"] if t["meets"]]
        assert candidate["sustained_per_s"] == max(met)
    best = max(grid, key=lambda c: c["sustained_per_s"])
    # the finalist: the best of the short steps, held over a step 5 times as long (at its rate, then lower)
    [finalist] = [c for c in grid if c["finalist"]]
    assert finalist["sustained_per_s"] == best["sustained_per_s"] and 1 <= len(finalist["verify_tried"]) <= 3
    assert finalist["verify_tried"][0]["offered_per_s"] == finalist["sustained_per_s"]
    assert finalist["verify_tried"][0]["seconds"] >= 1.5  # 5 x 300 ms of schedule, and the last answers
    choice = report["choice"]
    assert choice == finalist and choice["verified_per_s"] == finalist["verify_tried"][-1]["offered_per_s"]
    assert report["backend"] == "ort-cpu" and report["machine"]["cpu_features"] is not None
    assert report["command"].startswith("sk-deploy tune ") and report["load_before"] is not None
    assert sorted(p.name for p in (folder / "out").iterdir()) == ["tune.json", "tune.md", "tune.png"]
    assert "| max batch |" in (folder / "out" / "tune.md").read_text()
    assert read_settings(folder / "chosen.toml") == {"max_batch": choice["max_batch"], "max_delay_ms": 1.0,
                                                     "instances": 1}


def test_serve_and_triton_repo_take_the_settings(tuned: tuple[dict, Path], small_bundle: Bundle,
                                                 tmp_path: Path) -> None:
    report, folder = tuned
    chosen = folder / "chosen.toml"
    batch = report["choice"]["max_batch"]
    with served(small_bundle.path, "--config", str(chosen), "--max-delay-ms", "3", "--no-access-log") as server:
        served_batching = httpx.get(f"{server.url}/", trust_env=False).json()["batching"]
    assert (served_batching["max_batch"], served_batching["max_delay_ms"], served_batching["instances"]) == \
        (batch, 3.0, 1)  # the file's batch and instances, the command line's delay
    repo = tmp_path / "repo"
    result = runner.invoke(app, ["triton-repo", str(small_bundle.path), "--out", str(repo), "--instance-kind", "cpu",
                                 "--config", str(chosen), "--instances", "3"])
    assert result.exit_code == 0, result.output
    config = text_format.Parse(next(repo.glob("*/config.pbtxt")).read_text(), mc.ModelConfig())
    assert config.max_batch_size == batch
    assert config.dynamic_batching.max_queue_delay_microseconds == 1000
    assert [g.count for g in config.instance_group] == [3]


def test_a_bad_settings_file_is_one_line(tmp_path: Path, small_bundle: Bundle) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[serving]\nmax_batch = 0\n")
    with pytest.raises(SettingsError, match="max_batch: Input should be greater than or equal to 1"):
        read_settings(bad)
    bad.write_text("[serving]\nbatch = 4\n")
    result = runner.invoke(app, ["triton-repo", str(small_bundle.path), "--out", str(tmp_path / "r"),
                                 "--config", str(bad)])
    assert result.exit_code == 1 and "unknown key(s) in [serving]: batch" in result.output
    assert not (tmp_path / "r").exists()


def test_instances_where_the_backend_runs_several(small_bundle: Bundle) -> None:
    assert instances_refusal("ort-cpu") is None and instances_refusal("openvino") is None
    assert "process-wide" in (instances_refusal("torch") or "")
    options = instance_options("fp32", 2, cores=2)
    assert options["ort"].threads == 1 and options["openvino"].streams == 2
    batch = np.random.default_rng(0).standard_normal((3, *small_bundle.input_spec.item_shape)).astype(np.float32)
    with Predictor(small_bundle, "openvino", options=options) as parallel, Predictor(small_bundle, "ort-cpu") as ref:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(2) as pool:  # one infer request per thread: concurrent runs give the same logits
            outputs = list(pool.map(parallel.predict, [batch] * 4))
        for logits in outputs:
            np.testing.assert_allclose(logits, ref.predict(batch), atol=1e-4)
    result = runner.invoke(app, ["serve", str(small_bundle.path), "--backend", "torch", "--instances", "2",
                                 "--port", "0"])
    assert result.exit_code == 1 and "--instances 2: torch runs one instance" in result.output


def test_the_grid_drops_what_cannot_differ(small_bundle: Bundle) -> None:
    from sk_deploy.bench.tune import TuneConfig, TuneError, plan_grid

    config = TuneConfig(bundle=small_bundle.path, p99_ms=100, max_batch=(1, 8), max_delay_ms=(0, 5), instances=(1, 2))
    grid, note = plan_grid(config, "ort-cpu", instances_refusal("ort-cpu"))
    assert note is None and len(grid) == 8
    same = [(c.max_batch, c.max_delay_ms, c.instances) for c in grid if c.status == "same"]
    assert same == [(1, 5, 1), (1, 5, 2)]  # a batch of one never waits: the delay cannot matter
    grid, note = plan_grid(config, "torch", instances_refusal("torch"))
    assert {c.instances for c in grid} == {1} and len(grid) == 4 and "torch runs one" in (note or "")
    with pytest.raises(TuneError):
        plan_grid(TuneConfig(bundle=small_bundle.path, p99_ms=100, max_batch=(0,)), "ort-cpu", None)


def test_openvino_compiles_the_streams_two_instances_ask_for(small_bundle: Bundle, every_cpu: set[int]) -> None:
    """In a process of its own on every CPU: OpenVINO reads the CPUs it may use once, when its CPU plugin loads,
    and gives no more streams than that (this test's worker may keep to one CPU of the machine)."""
    if len(every_cpu) < 2:
        pytest.skip("needs a machine with two CPUs or more for two streams")
    probe = ("from sk_deploy.runtime.instances import instance_options\n"
             "from sk_deploy.runtime.predictor import Predictor\n"
             f"with Predictor({str(small_bundle.path)!r}, 'openvino', options=instance_options('fp32', 2, cores=2)) "
             "as parallel:\n    print(parallel._runner.streams)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split()[-1] == "2", done.stdout + done.stderr
