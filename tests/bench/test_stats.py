"""The figures every report is built from: percentiles on known arrays, ratios to the baseline, trtexec's
fields, the bounds of the timing loop, peak memory, the machine's description."""

from __future__ import annotations

import mmap
import os

import pytest
import torch

from sk_deploy.bench.latency import Row, compute_ratios, device_phases
from sk_deploy.bench.machine import describe_machine, describe_short, machine_slug
from sk_deploy.bench.report import trtexec_fields
from sk_deploy.bench.stats import per_second, summarize
from sk_deploy.bench.timing import peak_rss_mb, reset_peak_rss, timed_loop
from sk_deploy.machine import cgroup_cpu_limit


def test_percentiles_of_one_to_a_hundred() -> None:
    s = summarize(list(range(100, 0, -1)))  # order does not matter
    assert (s.n, s.min, s.max, s.mean) == (100, 1.0, 100.0, 50.5)
    # linear interpolation between closest ranks: rank q/100 * (n - 1) from 0
    assert s.p50 == pytest.approx(50.5)
    assert s.p90 == pytest.approx(90.1)
    assert s.p95 == pytest.approx(95.05)
    assert s.p99 == pytest.approx(99.01)


def test_percentiles_of_a_short_array() -> None:
    s = summarize([4.0, 1.0, 3.0, 2.0])
    assert s.p50 == pytest.approx(2.5)  # the mean of the middle two
    assert s.p90 == pytest.approx(3.7)  # rank 2.7: 3 + 0.7 * (4 - 3)
    assert s.p99 == pytest.approx(3.97)
    single = summarize([7.25])
    assert {single.min, single.p50, single.p99, single.max, single.mean} == {7.25}
    with pytest.raises(ValueError, match="no timings"):
        summarize([])


def test_per_second() -> None:
    assert per_second(80, 2.0) == 40.0
    assert per_second(5, 0.0) == 0.0


def test_device_phases_add_up_to_trtexec_latency() -> None:
    phases = device_phases([{"h2d": 1.0, "compute": 2.0, "d2h": 0.5}, {"h2d": 3.0, "compute": 4.0, "d2h": 0.5}])
    assert phases["compute"].min == 2.0 and phases["h2d"].max == 3.0
    assert phases["latency"].p50 == pytest.approx((3.5 + 7.5) / 2)
    row = {"batches_per_s": 250.0, "seconds": 2.0,
           "device_ms": {k: v.to_dict() for k, v in phases.items()}}
    fields = trtexec_fields(row)
    assert fields["throughput_qps"] == 250.0
    assert fields["gpu_compute_time_ms"]["median"] == pytest.approx(3.0)
    assert fields["latency_ms"]["max"] == pytest.approx(7.5)
    assert fields["total_gpu_compute_time_s"] == pytest.approx(0.006)
    assert fields["total_host_walltime_s"] == 2.0


def _row(backend: str, batch: int, p50: float, images_per_s: float, baseline: bool = False) -> Row:
    return Row(backend, "fp32", batch, baseline=baseline, latency=summarize([p50]), images_per_s=images_per_s)


def test_ratios_are_to_the_baseline_of_the_same_batch() -> None:
    rows = [_row("torch", 1, 10.0, 100.0, baseline=True), _row("torch", 8, 40.0, 200.0, baseline=True),
            _row("ort-cpu", 1, 5.0, 200.0), _row("ort-cpu", 8, 80.0, 100.0), _row("ort-cpu", 32, 1.0, 1.0),
            Row("ort-cuda", "fp32", None, status="skipped", reason="no GPU")]
    compute_ratios(rows)
    assert rows[0].vs_baseline == {"speedup_p50": 1.0, "throughput": 1.0}
    assert rows[2].vs_baseline == {"speedup_p50": 2.0, "throughput": 2.0}
    assert rows[3].vs_baseline == {"speedup_p50": 0.5, "throughput": 0.5}
    assert rows[4].vs_baseline is None  # no baseline measured at batch 32
    assert rows[5].vs_baseline is None


def test_timed_loop_stops_at_the_run_count_or_after_the_minimum() -> None:
    calls: list[int] = []
    loop = timed_loop(lambda: calls.append(1) or None, duration_s=60.0, min_runs=1, max_runs=7)
    assert len(loop.ms) == len(calls) == 7 and loop.extras == []
    loop = timed_loop(lambda: {"compute": 1.0}, duration_s=0.0, min_runs=3)
    assert len(loop.ms) == 3 and loop.extras == [{"compute": 1.0}] * 3 and loop.seconds >= 0


def test_peak_memory_is_reset_per_row() -> None:
    if not reset_peak_rss():
        pytest.skip("this kernel has no resettable peak-RSS record")
    before = peak_rss_mb()
    assert before is not None
    # fresh pages from the kernel: an allocator loaded earlier in this process (OpenVINO's TBB, say) may hand a
    # bytearray memory it already holds, which would not raise the peak
    block = mmap.mmap(-1, 120 * 1024 * 1024)
    block[::4096] = b"x" * len(range(0, len(block), 4096))  # touch every page
    grown = peak_rss_mb()
    block.close()
    assert grown is not None and grown >= before + 100
    assert reset_peak_rss() and (peak_rss_mb() or 0) < grown - 100


def test_machine_slug_and_description() -> None:
    assert machine_slug({"gpu": {"name": "NVIDIA H100 80GB HBM3"}}) == "nvidia-h100"
    assert machine_slug({"gpu": {"name": "NVIDIA A100-SXM4-40GB"}}) == "nvidia-a100"
    assert machine_slug({"gpu": {"name": "NVIDIA GeForce RTX 4090"}}) == "nvidia-geforce-rtx-4090"
    assert machine_slug({"gpu": None, "cores": 2}) == "cpu-2core"
    here = describe_machine()
    assert here["cpu"] and here["cores"] == os.cpu_count()
    # its CPU set (under pytest-xdist, this worker's share), less where a cgroup limits the time
    assert here["cores_usable"] == min(len(os.sched_getaffinity(0)), cgroup_cpu_limit() or os.cpu_count())
    assert describe_short({**here, "cores": 4, "cores_physical": 4, "cores_usable": 1}).startswith(
        f"{here['cpu']}, 4 cores, 1 usable by this process, ")
    assert {"torch", "onnxruntime", "python"} <= set(here["libraries"])
    assert (here["gpu"] is None) == (not torch.cuda.is_available())
    assert "CPUExecutionProvider" in here["ort_providers"]
