"""`sk-deploy bench` rows on OpenVINO, real and short: fp32 and int8 on the cleaned graph, fp32 on the raw export,
bf16 where the CPU computes it natively (a skipped row saying why elsewhere, and on the ONNX Runtime rows); each
measured row says what ran, the precision compiled read back."""

from __future__ import annotations

import pytest

from sk_deploy.bench.latency import BenchConfig, BenchRun
from sk_deploy.bench.report import build_report
from sk_deploy.bundle import Bundle
from sk_deploy.machine import detect_cpu
from sk_deploy.precisions import Precision

pytest.importorskip("openvino", reason="OpenVINO is a default dependency; this install lacks it")


def test_openvino_rows(small_bundle: Bundle) -> None:
    config = BenchConfig(backends=("openvino", "openvino-raw", "ort-cpu"), precisions=("fp32", "bf16", "int8"),
                         batches=(1, 2), warmup_s=0.02, duration_s=0.1, min_runs=3)
    run = BenchRun(small_bundle, config)
    run.execute()
    rows = {(r["backend"], r["precision"], r["batch"]): r for r in build_report(run, "test")["rows"]}
    for batch in (1, 2):
        fp32 = rows[("openvino", "fp32", batch)]
        assert fp32["status"] == "ok" and fp32["ran"] == "openvino fp32 (model.onnx; compiled f32)"
        assert fp32["vs_baseline"]["speedup_p50"] > 0  # against PyTorch eager of the same run
        raw = rows[("openvino-raw", "fp32", batch)]
        assert raw["status"] == "ok" and raw["file"] == "model.raw.onnx"
        assert raw["ran"] == "openvino-raw fp32 (model.raw.onnx; compiled f32)"
    refusal = Precision.BF16.cpu_refusal(detect_cpu())
    bf16 = rows[("openvino", "bf16", 1 if refusal is None else None)]
    if refusal is None:
        assert bf16["status"] == "ok" and bf16["ran"].endswith("compiled bf16)")
        assert rows[("openvino-raw", "bf16", 1)]["ran"].endswith("compiled bf16)")
    else:
        assert bf16["status"] == "skipped" and bf16["reason"] == refusal
    assert rows[("ort-cpu", "bf16", None)]["reason"].startswith("bf16 runs on the openvino backend only")
    assert "no int8 graph" in rows[("openvino", "int8", None)]["reason"]  # the small bundle has none
