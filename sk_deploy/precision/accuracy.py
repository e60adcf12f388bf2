"""What a precision costs: each precision graph against the float32 graph, on held-out real images."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sk_deploy.bundle import Bundle
from sk_deploy.metrics import Agreement, agreement

RANDOM_WEIGHTS_NOTE = (
    "random weights: logits of an untrained network are nearly tied, so top-1 agreement says little; "
    "cosine and SQNR carry the comparison"
)


@dataclass(frozen=True)
class Gate:
    """Minimum figures a precision graph must reach against float32."""

    min_cosine: float
    min_top1: float | None = None
    """Applied only with trained weights (see RANDOM_WEIGHTS_NOTE)."""


GATES = {
    "fp16": Gate(min_cosine=0.999, min_top1=0.98),
    "bf16": Gate(min_cosine=0.999, min_top1=0.98),  # the float32 graph compiled in bf16 (OpenVINO)
    "int8": Gate(min_cosine=0.99, min_top1=0.90),
    "int8-cpu": Gate(min_cosine=0.99, min_top1=0.90),
}


@dataclass
class AccuracyReport:
    """One precision graph's figures against float32, and the gate's verdict."""

    file: str
    precision: str
    agreement: Agreement
    gate: Gate
    trained_weights: bool
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Whether the gate was met."""
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form for the manifest."""
        return {
            "file": self.file, "precision": self.precision, "passed": self.passed,
            **self.agreement.to_dict(),
            "gate": {"min_cosine": self.gate.min_cosine,
                     "min_top1": self.gate.min_top1 if self.trained_weights else None},
            "failures": self.failures, "notes": self.notes,
        }


def judge(
    file: str, precision: str, reference: np.ndarray, output: np.ndarray, trained_weights: bool
) -> AccuracyReport:
    """Compare ``output`` to the float32 ``reference`` and apply the precision's gate."""
    figures = agreement(reference, output)
    gate = GATES[precision]
    report = AccuracyReport(file, precision, figures, gate, trained_weights)
    if figures.cosine_mean < gate.min_cosine:
        report.failures.append(f"mean cosine {figures.cosine_mean:.5f} < {gate.min_cosine}")
    if trained_weights and gate.min_top1 is not None and figures.top1_agreement < gate.min_top1:
        report.failures.append(f"top-1 agreement {figures.top1_agreement:.1%} < {gate.min_top1:.0%}")
    if not trained_weights:
        report.notes.append(RANDOM_WEIGHTS_NOTE)
    return report


def check_precision_files(bundle: Bundle, images: str | Path | None = None, limit: int = 16) -> list[AccuracyReport]:
    """Gate every FP16/INT8 file of ``bundle`` against its float32 ``model.onnx`` on pictures (a folder, or
    generated ones); the figures go into the manifest under ``stages.verify_precision``."""
    from sk_deploy.graph.reference import is_trained
    from sk_deploy.graph.verify import (
        batches_by_dtype,
        float_files,
        generated_images,
        image_files,
        ort_logits,
        preprocess_from_manifest,
    )

    names = [n for n in bundle.onnx_files() if n not in float_files(bundle)]
    if not names:
        return []
    spec = preprocess_from_manifest(bundle.manifest["preprocess"])
    sources: list[Any] = list(generated_images()) if images is None else list(image_files(images, limit))
    batch_for = batches_by_dtype(sources, spec)
    trained = is_trained(bundle.manifest["model"].get("weights", {}))
    reference = ort_logits(bundle.check_file("model.onnx"), batch_for)
    reports = [
        judge(name, bundle.manifest["files"][name]["role"], reference, ort_logits(bundle.check_file(name), batch_for),
              trained)
        for name in names
    ]
    bundle.record("verify_precision", {
        "images": "generated" if images is None else str(Path(images).resolve()), "count": len(sources),
        "files": {r.file: r.to_dict() for r in reports},
    })
    bundle.save()
    return reports
