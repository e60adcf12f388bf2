"""Parity of a bundle's ONNX files against the PyTorch model it came from, on real pictures.

The pictures go through the bundle's own preprocessing (``sk_deploy.images``); PyTorch gives the reference
logits; every ONNX file of the bundle runs on the runner the caller hands in (ONNX Runtime's CPU provider:
``sk_deploy.runners.onnx_cpu_runner``; this stage builds no runtime of its own) on the same pictures, as
float NCHW or, for a graph with fused preprocessing, as the uint8 NHWC crop. Figures per file: max and mean
absolute error of the logits, the lowest cosine similarity of any picture, top-1 agreement and top-5 overlap. A
file passes when they meet the thresholds; the figures go into the manifest under ``stages.verify``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sk_deploy.bundle import MODEL_FILE, RAW_FILE, Bundle
from sk_deploy.compare import (
    DEFAULT_LIMIT,
    Comparison,
    Pictures,
    Runner,
    compare_logits,
    compare_runners,
)
from sk_deploy.metrics import Agreement

#: makes the runner of one ONNX file (the caller's: this stage imports no runtime)
OnnxRunner = Callable[[Path], Runner]


class ModuleRunner:
    """A PyTorch module (CPU, float32, eval mode) as a comparator runner over float32 NCHW pictures."""

    input_dtype = "float32"
    max_batch = None

    def __init__(self, model: nn.Module) -> None:
        self.model = model.eval()

    def __enter__(self) -> ModuleRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Logits of ``batch``."""
        with torch.inference_mode():
            return self.model(torch.from_numpy(batch)).float().numpy()


@dataclass(frozen=True)
class Thresholds:
    """What a file must reach to pass: max abs error of the logits, lowest cosine, top-1 agreement."""

    max_abs: float = 1e-4
    min_cosine: float = 0.9999
    min_top1: float = 1.0

    def failures(self, figures: Agreement) -> list[str]:
        """The thresholds ``figures`` miss, one reason each."""
        reasons = []
        if figures.max_abs > self.max_abs:
            reasons.append(f"max abs error {figures.max_abs:.3g} > {self.max_abs:g}")
        if figures.cosine_min < self.min_cosine:
            reasons.append(f"cosine {figures.cosine_min:.6f} < {self.min_cosine}")
        if figures.top1_agreement < self.min_top1:
            reasons.append(f"top-1 agreement {figures.top1_agreement:.1%} < {self.min_top1:.0%}")
        return reasons


@dataclass
class FileParity:
    """The figures of one ONNX file against PyTorch."""

    file: str
    max_abs: float
    mean_abs: float
    min_cosine: float
    top1_agreement: float
    top5_overlap: float
    seconds: float
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """Whether every threshold was met."""
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {**asdict(self), "passed": self.passed, "seconds": round(self.seconds, 2)}

    @classmethod
    def of(cls, result: Comparison) -> FileParity:
        """The parity record of one comparison against PyTorch."""
        figures = result.agreement
        return cls(file=result.name, max_abs=figures.max_abs, mean_abs=figures.mean_abs,
                   min_cosine=figures.cosine_min, top1_agreement=figures.top1_agreement,
                   top5_overlap=figures.top5_overlap, seconds=result.seconds, failures=result.failures)


@dataclass
class VerifyReport:
    """Parity of every checked file, the pictures used and the thresholds applied."""

    images: str
    count: int
    thresholds: Thresholds
    files: list[FileParity]

    @property
    def passed(self) -> bool:
        """Whether every file passed."""
        return all(f.passed for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form for the manifest."""
        return {
            "passed": self.passed, "images": self.images, "count": self.count,
            "thresholds": asdict(self.thresholds), "files": {f.file: f.to_dict() for f in self.files},
        }


def compare(
    name: str, reference: np.ndarray, output: np.ndarray, thresholds: Thresholds, seconds: float = 0.0
) -> FileParity:
    """Figures of ``output`` logits against ``reference`` (both (N, classes)) and the thresholds they miss."""
    return FileParity.of(compare_logits(name, reference, output, thresholds, seconds))


FLOAT_ROLES = ("raw", "model")


def float_files(bundle: Bundle) -> list[str]:
    """The bundle's float32 ONNX files (held to PyTorch parity); FP16/INT8 files have gates of their own."""
    roles = bundle.roles
    return [n for n in bundle.onnx_files() if roles[n] in FLOAT_ROLES]


def verify_bundle(
    bundle: Bundle,
    model: nn.Module | None,
    onnx_runner: OnnxRunner,
    images: str | Path | None = None,
    limit: int = DEFAULT_LIMIT,
    thresholds: Thresholds | None = None,
    files: list[str] | None = None,
    save: bool = True,
) -> VerifyReport:
    """Check every ONNX file of ``bundle`` (or ``files``) against ``model``; record the figures in the manifest.

    ``images`` is a folder of pictures (the first ``limit`` by name) or None for a few generated ones. Each ONNX
    file runs on ``onnx_runner(path)``. ``model`` None (a bundle of ``sk-deploy import``): the reference is the
    input graph, ``model.raw.onnx``, and ``model.onnx`` is checked against it.
    """
    thresholds = thresholds or Thresholds()
    pictures = Pictures.of(bundle.preprocess, images, limit)
    if model is None:
        reference, default = onnx_runner(bundle.check_file(RAW_FILE)), [MODEL_FILE]
    else:
        reference, default = ModuleRunner(model), float_files(bundle)
    names = files if files is not None else default
    runners = {name: onnx_runner(bundle.check_file(name)) for name in names}
    results = compare_runners(reference, runners, pictures, lambda name: thresholds)
    report = VerifyReport(pictures.description, len(pictures), thresholds, [FileParity.of(r) for r in results])
    if save:
        bundle.record("verify", report.to_dict())
        bundle.save()
    return report
