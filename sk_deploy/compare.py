"""The one comparator: run models over a picture set, compare each with a reference (``metrics.agreement``) and
apply a gate.

``sk-deploy verify`` holds the float32 graphs to PyTorch (``graph.verify``), the precision gates hold FP16/INT8
graphs to the float32 graph (``precision.accuracy``); both are this, with their own reference, runners and gate.
A runner takes ``batch_for(dtype)`` (the pictures as a graph of that input dtype takes them: float32 NCHW or
uint8 NHWC crops) and gives logits; ONNX graphs run through the ONNX Runtime CPU backend the Predictor uses.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from PIL import Image

from sk_deploy.errors import SkDeployError
from sk_deploy.images import ImageError, Preprocess, find_images, load_batch
from sk_deploy.metrics import Agreement, agreement

DEFAULT_LIMIT = 16
GENERATED = 8

BatchFor = Callable[[str], np.ndarray]
Runner = Callable[[BatchFor], np.ndarray]


class VerifyError(SkDeployError, RuntimeError):
    """A comparison that could not run (no pictures, an unreadable file); the message is meant for a person."""


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


@dataclass
class Pictures:
    """A set of pictures (files or encoded bytes), decoded once per input form a graph takes."""

    sources: list[Any]
    description: str
    preprocess: Preprocess
    _batches: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    @classmethod
    def of(cls, preprocess: Preprocess, images: str | Path | None = None, limit: int = DEFAULT_LIMIT) -> Pictures:
        """The first ``limit`` pictures of the folder ``images``, or GENERATED generated ones when None."""
        if images is None:
            sources: list[Any] = list(generated_images())
            return cls(sources, f"generated ({len(sources)})", preprocess)
        return cls(list(image_files(images, limit)), str(Path(images).resolve()), preprocess)

    def __len__(self) -> int:
        return len(self.sources)

    def batch(self, dtype: str) -> np.ndarray:
        """The pictures as a graph with input ``dtype`` takes them; an undecodable picture is a VerifyError."""
        if dtype not in self._batches:
            try:
                self._batches[dtype] = load_batch(self.sources, self.preprocess, uint8_nhwc=dtype == "uint8")
            except ImageError as exc:
                raise VerifyError(str(exc)) from None
        return self._batches[dtype]


def torch_runner(model: Any, chunk: int = 8) -> Runner:
    """A PyTorch module (CPU, float32, eval mode) as a runner over float32 NCHW pictures, in chunks."""
    import torch

    def run(batch_for: BatchFor) -> np.ndarray:
        batch = batch_for("float32")
        with torch.inference_mode():
            return np.concatenate([model(torch.from_numpy(batch[i:i + chunk])).float().numpy()
                                   for i in range(0, len(batch), chunk)])

    return run


def onnx_runner(path: str | Path, chunk: int = 8) -> Runner:
    """An ONNX file on ONNX Runtime's CPU backend as a runner; it takes the pictures in its input's form."""
    from sk_deploy.machine import BackendUnavailable
    from sk_deploy.runtime.ort_backend import OrtCpuBackend

    def run(batch_for: BatchFor) -> np.ndarray:
        try:
            backend = OrtCpuBackend(path)
        except BackendUnavailable as exc:
            raise VerifyError(str(exc)) from None
        with backend:
            uint8 = backend.session.get_inputs()[0].type == "tensor(uint8)"
            batch = batch_for("uint8" if uint8 else "float32")
            try:
                return np.concatenate([backend.run(batch[i:i + chunk]) for i in range(0, len(batch), chunk)])
            except Exception as exc:  # shape or type mismatch between the pictures and the graph's input
                first = str(exc).strip().splitlines()[0][:200]
                raise VerifyError(f"{path}: ONNX Runtime cannot run it ({first})") from None

    return run


def ort_logits(path: str | Path, batch_for: BatchFor, chunk: int = 8) -> np.ndarray:
    """Logits of an ONNX file from ONNX Runtime (CPU); ``batch_for("uint8" | "float32")`` gives its input."""
    return onnx_runner(path, chunk)(batch_for)


class Gate(Protocol):
    """What a compared output must reach: the reasons it falls short (none: it passes)."""

    def failures(self, figures: Agreement) -> list[str]: ...


@dataclass
class Comparison:
    """One output's figures against the reference, what its gate found short, and the seconds it took."""

    name: str
    agreement: Agreement
    failures: list[str]
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """Whether the gate was met."""
        return not self.failures


def compare_logits(name: str, reference: np.ndarray, output: np.ndarray, gate: Gate,
                   seconds: float = 0.0) -> Comparison:
    """``output`` logits against ``reference`` (both (N, classes)): the figures and the gate's verdict."""
    if reference.shape != output.shape:
        raise VerifyError(f"{name}: output shape {output.shape} differs from the reference's {reference.shape}")
    figures = agreement(reference, output)
    return Comparison(name, figures, gate.failures(figures), seconds)


def compare_runners(reference: Runner, runners: dict[str, Runner], pictures: Pictures,
                    gate: Callable[[str], Gate]) -> list[Comparison]:
    """Run ``reference`` and every runner on ``pictures``; compare each with the reference under ``gate(name)``."""
    expected = reference(pictures.batch)
    results = []
    for name, runner in runners.items():
        start = time.perf_counter()
        output = runner(pictures.batch)
        results.append(compare_logits(name, expected, output, gate(name), time.perf_counter() - start))
    return results
