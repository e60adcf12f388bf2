"""What a precision costs: each precision graph against the float32 graph, on held-out real images."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sk_deploy.bundle import MODEL_FILE, Bundle, is_trained
from sk_deploy.compare import DEFAULT_LIMIT, Comparison, Pictures, compare_logits, compare_runners
from sk_deploy.metrics import Agreement

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

    def applied(self, trained_weights: bool) -> AppliedGate:
        """The gate as it applies to a network with trained (or random) weights."""
        return AppliedGate(self, trained_weights)


@dataclass(frozen=True)
class AppliedGate:
    """A Gate for one kind of weights: top-1 agreement counts only with trained ones."""

    gate: Gate
    trained_weights: bool

    def failures(self, figures: Agreement) -> list[str]:
        """The gate's figures ``figures`` miss, one reason each."""
        reasons = []
        if figures.cosine_mean < self.gate.min_cosine:
            reasons.append(f"mean cosine {figures.cosine_mean:.5f} < {self.gate.min_cosine}")
        top1 = self.gate.min_top1
        if self.trained_weights and top1 is not None and figures.top1_agreement < top1:
            reasons.append(f"top-1 agreement {figures.top1_agreement:.1%} < {top1:.0%}")
        return reasons


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
    return _report(compare_logits(file, reference, output, GATES[precision].applied(trained_weights)), precision,
                   trained_weights)


def report_for(result: Comparison, precision: str, gate: Gate, trained_weights: bool) -> AccuracyReport:
    """A comparator result as the AccuracyReport of a ``precision`` graph judged under ``gate``."""
    return AccuracyReport(result.name, precision, result.agreement, gate, trained_weights,
                          result.failures, [] if trained_weights else [RANDOM_WEIGHTS_NOTE])


def _report(result: Comparison, precision: str, trained_weights: bool) -> AccuracyReport:
    return report_for(result, precision, GATES[precision], trained_weights)


def check_precision_files(bundle: Bundle, images: str | Path | None = None,
                          limit: int = DEFAULT_LIMIT) -> list[AccuracyReport]:
    """Gate every FP16/INT8 file of ``bundle`` against its float32 ``model.onnx`` on pictures (a folder, or
    generated ones); the figures go into the manifest under ``stages.verify_precision``."""
    from sk_deploy.graph.verify import float_files
    from sk_deploy.runners import onnx_cpu_runner

    names = [n for n in bundle.onnx_files() if n not in float_files(bundle)]
    if not names:
        return []
    pictures = Pictures.of(bundle.preprocess, images, limit)
    trained = is_trained(bundle.weights)
    roles = bundle.roles
    runners = {name: onnx_cpu_runner(bundle.check_file(name)) for name in names}
    results = compare_runners(onnx_cpu_runner(bundle.check_file(MODEL_FILE)), runners, pictures,
                              lambda name: GATES[roles[name]].applied(trained))
    reports = [_report(r, roles[r.name], trained) for r in results]
    bundle.record("verify_precision", {
        "images": "generated" if images is None else pictures.description, "count": len(pictures),
        "files": {r.file: r.to_dict() for r in reports},
    })
    bundle.save()
    return reports
