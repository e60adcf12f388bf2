"""Every backend that can run a bundle here, against the float32 graph on the same pictures (like
``polygraphy run --trt --onnxrt``): ONNX Runtime CPU on each ONNX file, ONNX Runtime CUDA where its provider and a
GPU are there, and each TensorRT engine built for this GPU and TensorRT. Each pair gets its precision's gate
(``accuracy.GATES``; fp32 on another backend: ``FP32_GATE``, which leaves room for TF32 on GPUs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sk_deploy.bundle import Bundle
from sk_deploy.engines.compat import EngineMismatch, check_engine
from sk_deploy.metrics import agreement
from sk_deploy.precision.accuracy import GATES, AccuracyReport, Gate, judge
from sk_deploy.runtime.availability import Machine

FP32_GATE = Gate(min_cosine=0.9999)
REFERENCE = "model.onnx"


@dataclass(frozen=True)
class Pair:
    """One backend running one file of the bundle, at a precision."""

    backend: str
    file: str
    precision: str


def file_precision(entry: dict) -> str:
    """The precision key of a manifest file entry: fp32, fp16, int8 (TensorRT form) or int8-cpu."""
    if entry.get("role") == "engine":
        return entry.get("precision", "fp32")
    role = entry.get("role", "model")
    return role if role in GATES else "fp32"


def runnable_pairs(manifest: dict, machine: Machine) -> tuple[list[Pair], list[str]]:
    """The (backend, file) pairs ``machine`` can run, and one line for each it cannot and why."""
    pairs, skipped = [], []
    files = manifest.get("files", {})
    onnx_files = [name for name in files if name.endswith(".onnx")]
    for name in onnx_files:
        pairs.append(Pair("ort-cpu", name, file_precision(files[name])))
    if machine.cuda and "CUDAExecutionProvider" in machine.ort_providers:
        pairs += [Pair("ort-cuda", name, file_precision(files[name])) for name in onnx_files
                  if files[name].get("role") != "int8-cpu"]
    else:
        skipped.append("ort-cuda: " + ("no CUDA GPU" if not machine.cuda else "onnxruntime-gpu's CUDA provider "
                                       "is not installed"))
    engines = [name for name, entry in files.items() if entry.get("role") == "engine"]
    for name in engines:
        try:
            check_engine(files[name], machine.tensorrt_version, machine.gpu_name, machine.compute_capability, name)
        except EngineMismatch as exc:
            skipped.append(f"tensorrt: {exc}")
            continue
        pairs.append(Pair("tensorrt", name, file_precision(files[name])))
    if not engines:
        skipped.append("tensorrt: the bundle has no engine (sk-deploy build, where TensorRT and a GPU are)")
    return pairs, skipped


def _open(bundle: Bundle, pair: Pair) -> Callable[[np.ndarray], np.ndarray]:
    path = bundle.check_file(pair.file)
    if pair.backend == "tensorrt":
        from sk_deploy.runtime.trt_backend import TensorRTBackend

        engine = TensorRTBackend(path, bundle.manifest["files"][pair.file])
        step = engine.max_batch or 1
        return lambda batch: np.concatenate([engine.run(batch[i:i + step]) for i in range(0, len(batch), step)])
    from sk_deploy.runtime.ort_backend import OrtBackend

    runner = OrtBackend(path, pair.backend)
    return lambda batch: np.concatenate([runner.run(batch[i:i + 8]) for i in range(0, len(batch), 8)])


def compare_backends(
    bundle: Bundle, pairs: list[Pair], batch_for: Callable[[str], np.ndarray], trained: bool
) -> list[AccuracyReport]:
    """Run each pair on ``batch_for(input dtype)`` and judge it against ``model.onnx`` on ONNX Runtime CPU."""
    from sk_deploy.graph.verify import ort_logits

    reference = ort_logits(bundle.check_file(REFERENCE), batch_for)
    dtype = "uint8" if bundle.manifest["input"].get("dtype") == "uint8" else "float32"
    reports = []
    for pair in pairs:
        if (pair.backend, pair.file) == ("ort-cpu", REFERENCE):
            continue  # the reference itself
        logits = _open(bundle, pair)(batch_for(dtype))
        name = f"{pair.backend}: {pair.file}"
        if pair.precision in GATES:
            reports.append(judge(name, pair.precision, reference, logits, trained))
            continue
        report = AccuracyReport(name, pair.precision, agreement(reference, logits), FP32_GATE, trained)
        if report.agreement.cosine_mean < FP32_GATE.min_cosine:
            report.failures.append(f"mean cosine {report.agreement.cosine_mean:.6f} < {FP32_GATE.min_cosine}")
        reports.append(report)
    return reports


def check_backends(
    bundle: Bundle, images: str | Path | None = None, limit: int = 16, machine: Machine | None = None,
    skip_cpu: bool = True,
) -> tuple[list[AccuracyReport], list[str]]:
    """``sk-deploy verify``'s backend pass: every runnable pair (ort-cpu left out with ``skip_cpu``, since the
    precision check already ran those) against ``model.onnx`` on pictures (a folder, or generated ones);
    recorded under ``stages.verify_backends``. Returns the reports and the lines for what could not run."""
    from sk_deploy.graph.reference import is_trained
    from sk_deploy.graph.verify import batches_by_dtype, generated_images, image_files, preprocess_from_manifest
    from sk_deploy.runtime.availability import probe_machine

    pairs, skipped = runnable_pairs(bundle.manifest, machine or probe_machine())
    pairs = [p for p in pairs if not (skip_cpu and p.backend == "ort-cpu")]
    spec = preprocess_from_manifest(bundle.manifest["preprocess"])
    sources: list[Any] = list(generated_images()) if images is None else list(image_files(images, limit))
    trained = is_trained(bundle.manifest["model"].get("weights", {}))
    reports = compare_backends(bundle, pairs, batches_by_dtype(sources, spec), trained) if pairs else []
    bundle.record("verify_backends", {
        "images": "generated" if images is None else str(Path(images).resolve()), "count": len(sources),
        "pairs": {r.file: r.to_dict() for r in reports}, "not_run": skipped,
    })
    bundle.save()
    return reports, skipped
