"""`sk-deploy verify`'s backend pass: which (backend, file) pairs a machine can run, and their figures against the
float32 graph on ONNX Runtime CPU."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sk_deploy.bundle import Bundle
from sk_deploy.cli import app
from sk_deploy.compare import Pictures, generated_images
from sk_deploy.machine import CpuFeatures, Machine, probe_machine
from sk_deploy.precision.backends import FP32_GATE, Pair, compare_backends, runnable_pairs
from sk_deploy.precision.pipeline import quantize_bundle
from sk_deploy.settings.precision import QuantizeSettings

runner = CliRunner()
CPU_ONLY = Machine(cuda=False, gpu_name=None, compute_capability=None, ort_providers=("CPUExecutionProvider",),
                   tensorrt_version=None, openvino_version=probe_machine().openvino_version)
H200 = Machine(cuda=True, gpu_name="NVIDIA H200", compute_capability=(9, 0),
               ort_providers=("CUDAExecutionProvider", "CPUExecutionProvider"), tensorrt_version="11.4.0",
               openvino_version=probe_machine().openvino_version)


@pytest.fixture()
def with_fp16(small_bundle: Bundle, tmp_path: Path) -> Bundle:
    copy = tmp_path / "bundle"
    shutil.copytree(small_bundle.path, copy)
    quantize_bundle(QuantizeSettings(bundle=copy, precision="fp16"))
    return Bundle.open(copy)


def engine_entry(gpu: str, cc: list[int], version: str, precision: str = "int8") -> dict:
    return {"role": "engine", "precision": precision, "tensorrt": {"version": version},
            "gpu": {"name": gpu, "compute_capability": cc}, "hardware_compat": "none"}


def test_pairs_follow_the_machine(with_fp16: Bundle) -> None:
    manifest = json.loads(json.dumps(with_fp16.manifest))
    manifest["files"]["model.int8.h200.trt11.4.plan"] = engine_entry("NVIDIA H200", [9, 0], "11.4.0")
    manifest["files"]["model.fp16.l4.trt11.4.plan"] = engine_entry("NVIDIA L4", [8, 9], "11.4.0", "fp16")
    pairs, skipped = runnable_pairs(manifest, CPU_ONLY)
    # OpenVINO serves fp32 and bf16 (not fp16); bf16 is refused, with the reason, on a CPU without native bf16
    assert pairs == [Pair("ort-cpu", "model.raw.onnx", "fp32"), Pair("ort-cpu", "model.onnx", "fp32"),
                     Pair("ort-cpu", "model.fp16.onnx", "fp16"), Pair("openvino", "model.onnx", "fp32")]
    assert skipped[0] == "ort-cuda: no CUDA GPU"
    assert skipped[1].startswith("openvino bf16: bf16 needs a CPU with native bfloat16")
    bf16_cpu = dataclasses.replace(CPU_ONLY, cpu=CpuFeatures("test CPU", frozenset({"avx512_bf16"})))
    pairs, skipped = runnable_pairs(manifest, bf16_cpu)
    assert pairs[-1] == Pair("openvino", "model.onnx", "bf16") and pairs[-1].runs_at == "bf16"
    assert not any(line.startswith("openvino") for line in skipped)
    pairs, skipped = runnable_pairs(manifest, CPU_ONLY)
    assert sum("a TensorRT engine needs TensorRT and an NVIDIA GPU" in line for line in skipped) == 2
    pairs, skipped = runnable_pairs(manifest, H200)
    assert Pair("tensorrt", "model.int8.h200.trt11.4.plan", "int8") in pairs
    assert Pair("ort-cuda", "model.fp16.onnx", "fp16") in pairs
    assert not any(p.file == "model.fp16.l4.trt11.4.plan" for p in pairs)
    assert len(skipped) == 2 and skipped[0].startswith("openvino bf16:") and "built for NVIDIA L4" in skipped[1]


def test_cpu_pairs_against_the_float32_graph(with_fp16: Bundle) -> None:
    pairs, _ = runnable_pairs(with_fp16.manifest, CPU_ONLY)
    pictures = Pictures(generated_images(4), "generated (4)", with_fp16.preprocess)
    reports = compare_backends(with_fp16, pairs, pictures, trained=False)
    by_file = {r.file: r for r in reports}
    assert set(by_file) == {"ort-cpu: model.raw.onnx", "ort-cpu: model.fp16.onnx", "openvino: model.onnx"}
    raw, fp16 = by_file["ort-cpu: model.raw.onnx"], by_file["ort-cpu: model.fp16.onnx"]
    assert raw.gate == FP32_GATE and raw.passed and raw.agreement.cosine_mean > 0.99999
    openvino = by_file["openvino: model.onnx"]
    assert openvino.gate == FP32_GATE and openvino.passed and openvino.agreement.cosine_mean > 0.9999
    assert fp16.precision == "fp16" and fp16.passed and fp16.agreement.images == 4


def test_verify_says_what_did_not_run(with_fp16: Bundle) -> None:
    result = runner.invoke(app, ["verify", str(with_fp16.path), "--limit", "4"])
    assert result.exit_code == 0, result.output
    assert "not run: ort-cuda: no CUDA GPU" in result.output
    assert "tensorrt: the bundle has no engine" in result.output
    record = json.loads((with_fp16.path / "manifest.json").read_text())["stages"]["verify_backends"]
    bf16 = probe_machine().cpu.native_bf16
    served = {"openvino: model.onnx", *(["openvino: model.onnx in bf16"] if bf16 else [])}
    assert set(record["pairs"]) == served and all(pair["passed"] for pair in record["pairs"].values())
    assert len(record["not_run"]) == (2 if bf16 else 3)
    if not bf16:
        assert "not run: openvino bf16: bf16 needs a CPU with native bfloat16" in result.output
