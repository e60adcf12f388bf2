"""Parity of a bundle's ONNX files against the PyTorch model it came from, on real pictures.

The pictures go through the bundle's own preprocessing (``sk_deploy.images``); PyTorch gives the reference
logits; every ONNX file of the bundle runs in ONNX Runtime (CPU) on the same pictures, as float NCHW or, for a
graph with fused preprocessing, as the uint8 NHWC crop. Figures per file: max and mean absolute error of the
logits, the lowest cosine similarity of any picture, top-1 agreement and top-5 overlap. A file passes when
they meet the thresholds; the figures go into the manifest under ``stages.verify``.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from sk_deploy.bundle import Bundle
from sk_deploy.images import ImageError, Preprocess, find_images, load_batch
from sk_deploy.metrics import agreement

DEFAULT_LIMIT = 16
GENERATED = 8


@dataclass(frozen=True)
class Thresholds:
    """What a file must reach to pass: max abs error of the logits, lowest cosine, top-1 agreement."""

    max_abs: float = 1e-4
    min_cosine: float = 0.9999
    min_top1: float = 1.0


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


class VerifyError(RuntimeError):
    """Verification that could not run (no pictures, an unreadable file); the message is meant for a person."""


def generated_images(count: int = GENERATED, size: tuple[int, int] = (320, 256)) -> list[bytes]:
    """``count`` deterministic PNG pictures (gradients, discs, stripes and texture), not plain noise."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    pictures = []
    for i in range(count):
        rng = np.random.default_rng(1000 + i)
        base = np.stack([(xx / w) * 255, (yy / h) * 255, ((xx + yy) / (w + h)) * 255], axis=-1)
        base = np.roll(base, i, axis=-1) * rng.uniform(0.5, 1.0, size=3)
        cx, cy, r = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h, rng.uniform(0.15, 0.35) * min(w, h)
        disc = (xx - cx) ** 2 + (yy - cy) ** 2 < r**2
        base[disc] = rng.uniform(0, 255, size=3)
        stripes = (np.sin(xx * rng.uniform(0.05, 0.4) + yy * rng.uniform(0.0, 0.2)) > 0.6)[..., None]
        base = np.where(stripes, base * 0.6, base) + rng.normal(0, 8, size=base.shape)
        buffer = io.BytesIO()
        Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
        pictures.append(buffer.getvalue())
    return pictures


def image_files(folder: str | Path, limit: int | None = DEFAULT_LIMIT) -> list[Path]:
    """The first ``limit`` (default 16, None: all) pictures of ``folder`` by name, searched recursively."""
    try:
        return find_images(folder)[:limit]
    except ImageError as exc:
        raise VerifyError(str(exc)) from None


def preprocess_from_manifest(entry: dict[str, Any]) -> Preprocess:
    """The Preprocess a manifest's ``preprocess`` section describes."""
    return Preprocess(
        resize=int(entry["resize"]), crop=int(entry["crop"]), interpolation=str(entry["interpolation"]),
        mean=tuple(entry["mean"]), std=tuple(entry["std"]),
    )


def batches_by_dtype(sources: list[Any], spec: Preprocess) -> Callable[[str], np.ndarray]:
    """``batch_for("float32" | "uint8")``: the pictures as a graph with that input dtype takes them (NCHW
    normalised, or uint8 NHWC crops), decoded once per form; an undecodable picture is a VerifyError."""
    batches: dict[str, np.ndarray] = {}

    def batch_for(dtype: str) -> np.ndarray:
        if dtype not in batches:
            try:
                batches[dtype] = load_batch(sources, spec, uint8_nhwc=dtype == "uint8")
            except ImageError as exc:
                raise VerifyError(str(exc)) from None
        return batches[dtype]

    return batch_for


def torch_logits(model: nn.Module, batch: np.ndarray, chunk: int = 8) -> np.ndarray:
    """Reference logits from PyTorch (CPU, float32), run in chunks of ``chunk`` pictures."""
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(batch), chunk):
            outputs.append(model(torch.from_numpy(batch[start:start + chunk])).float().numpy())
    return np.concatenate(outputs)


def ort_logits(path: str | Path, batch_for: Callable[[str], np.ndarray], chunk: int = 8) -> np.ndarray:
    """Logits of an ONNX file from ONNX Runtime (CPU); ``batch_for("uint8" | "float32")`` gives its input."""
    import onnxruntime as ort

    from sk_deploy.precision.mixed import ort_disabled_optimizers

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"],
                                       disabled_optimizers=ort_disabled_optimizers(path))
    except Exception as exc:  # ORT raises its own Fail/InvalidGraph types without a shared base
        raise VerifyError(f"{path}: ONNX Runtime cannot load it ({str(exc).strip().splitlines()[0][:200]})") from None
    feed = session.get_inputs()[0]
    batch = batch_for("uint8" if feed.type == "tensor(uint8)" else "float32")
    outputs = []
    try:
        for start in range(0, len(batch), chunk):
            outputs.append(session.run(None, {feed.name: batch[start:start + chunk]})[0].astype(np.float32))
    except Exception as exc:  # shape or type mismatch between the pictures and the graph's input
        raise VerifyError(f"{path}: ONNX Runtime cannot run it ({str(exc).strip().splitlines()[0][:200]})") from None
    return np.concatenate(outputs)


def compare(
    name: str, reference: np.ndarray, output: np.ndarray, thresholds: Thresholds, seconds: float = 0.0
) -> FileParity:
    """Figures of ``output`` logits against ``reference`` (both (N, classes)) and the thresholds they miss."""
    if reference.shape != output.shape:
        raise VerifyError(f"{name}: output shape {output.shape} differs from PyTorch's {reference.shape}")
    figures = agreement(reference, output)
    parity = FileParity(
        file=name, max_abs=figures.max_abs, mean_abs=figures.mean_abs, min_cosine=figures.cosine_min,
        top1_agreement=figures.top1_agreement, top5_overlap=figures.top5_overlap, seconds=seconds,
    )
    if parity.max_abs > thresholds.max_abs:
        parity.failures.append(f"max abs error {parity.max_abs:.3g} > {thresholds.max_abs:g}")
    if parity.min_cosine < thresholds.min_cosine:
        parity.failures.append(f"cosine {parity.min_cosine:.6f} < {thresholds.min_cosine}")
    if parity.top1_agreement < thresholds.min_top1:
        parity.failures.append(f"top-1 agreement {parity.top1_agreement:.1%} < {thresholds.min_top1:.0%}")
    return parity


FLOAT_ROLES = ("raw", "model")


def float_files(bundle: Bundle) -> list[str]:
    """The bundle's float32 ONNX files (held to PyTorch parity); FP16/INT8 files have gates of their own."""
    return [n for n in bundle.onnx_files() if bundle.manifest["files"][n].get("role", "model") in FLOAT_ROLES]


def verify_bundle(
    bundle: Bundle,
    model: nn.Module,
    images: str | Path | None = None,
    limit: int = DEFAULT_LIMIT,
    thresholds: Thresholds | None = None,
    files: list[str] | None = None,
    save: bool = True,
) -> VerifyReport:
    """Check every ONNX file of ``bundle`` (or ``files``) against ``model``; record the figures in the manifest.

    ``images`` is a folder of pictures (the first ``limit`` by name) or None for a few generated ones.
    """
    thresholds = thresholds or Thresholds()
    spec = preprocess_from_manifest(bundle.manifest["preprocess"])
    if images is None:
        sources: list[Any] = list(generated_images())
        description = f"generated ({len(sources)})"
    else:
        sources = list(image_files(images, limit))
        description = str(Path(images).resolve())
    names = files if files is not None else float_files(bundle)
    batch_for = batches_by_dtype(sources, spec)
    reference = torch_logits(model.eval(), batch_for("float32"))
    results = []
    for name in names:
        start = time.perf_counter()
        output = ort_logits(bundle.check_file(name), batch_for)
        results.append(compare(name, reference, output, thresholds, time.perf_counter() - start))
    report = VerifyReport(description, len(sources), thresholds, results)
    if save:
        bundle.record("verify", report.to_dict())
        bundle.save()
    return report
