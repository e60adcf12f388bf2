"""The GPUs' figures in /metrics under Triton's ``nv_gpu_*`` names: absent, not zero, on a machine without a GPU;
one sample per visible GPU where there is one; which GPUs CUDA_VISIBLE_DEVICES leaves visible."""

from __future__ import annotations

import httpx
import pytest

from sk_deploy.bench.prometheus import parse_metrics
from sk_deploy.nvml import GpuReading, open_gpus, visible_indices
from sk_deploy.service.gpu_metrics import FAMILIES, render_readings

GPU_NAMES = tuple(name for name, *_ in FAMILIES)


def _gpu_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(name in line for name in GPU_NAMES)]


def test_no_gpu_figures_on_a_machine_without_one(client: httpx.Client) -> None:
    if open_gpus():
        pytest.skip("this machine has a GPU that NVML sees: test_gpu_figures_for_each_visible_gpu checks it")
    text = client.get("/metrics").text
    assert "nv_inference_count" in text  # the scrape itself is whole
    assert _gpu_lines(text) == []  # not even a HELP line: a dashboard shows "no data", not an idle GPU


@pytest.mark.gpu
def test_gpu_figures_for_each_visible_gpu(client: httpx.Client) -> None:
    uuids = {gpu.uuid for gpu in open_gpus()}
    samples = [s for s in parse_metrics(client.get("/metrics").text) if s.name.startswith(GPU_NAMES)]
    by_name: dict[str, dict[str, float]] = {}
    for s in samples:
        by_name.setdefault(s.name.removesuffix("_total"), {})[s.labels["gpu_uuid"]] = s.value
    assert set(by_name["nv_gpu_memory_total_bytes"]) == uuids
    assert all(v > 0 for v in by_name["nv_gpu_memory_total_bytes"].values())
    assert all(0 <= v <= 1 for v in by_name.get("nv_gpu_utilization", {}).values())
    assert all(v >= 0 for v in by_name.get("nv_energy_consumption", {}).values())


def test_a_figure_no_gpu_reports_is_left_out_and_energy_counts_from_the_start() -> None:
    readings = [GpuReading("GPU-a", 0.25, 80 << 30, 1 << 30, 120.5, 700.0, 5000.0),
                GpuReading("GPU-b", 0.0, 80 << 30, 0, None, None, None)]
    text = render_readings(readings, {"GPU-a": 4000.0}).decode()
    samples = {(s.name, s.labels["gpu_uuid"]): s.value for s in parse_metrics(text)}
    assert samples[("nv_gpu_utilization", "GPU-a")] == 0.25
    assert samples[("nv_gpu_utilization", "GPU-b")] == 0.0  # a real zero is kept
    assert ("nv_gpu_power_usage", "GPU-b") not in samples  # not reported: absent, not 0
    assert samples[("nv_gpu_power_usage", "GPU-a")] == 120.5
    energy = [line for line in text.splitlines() if line.startswith("nv_energy_consumption{")]
    assert energy == ['nv_energy_consumption{gpu_uuid="GPU-a"} 1000.0']  # Triton's bare name, since the start
    assert "# TYPE nv_energy_consumption counter" in text
    assert render_readings([GpuReading("GPU-c", *([None] * 6))], {}) == b""


@pytest.mark.parametrize(("setting", "expected"), [
    (None, [0, 1, 2]), ("", []), ("-1", []), ("2,0", [2, 0]), ("1,7,0", [1]), ("GPU-bb", [1]), ("GPU-c,0", [2, 0]),
    ("0,0", [0]),
])
def test_cuda_visible_devices_picks_the_gpus(setting: str | None, expected: list[int]) -> None:
    assert visible_indices(3, ["GPU-aa11", "GPU-bb22", "GPU-cc33"], setting) == expected
