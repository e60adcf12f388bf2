"""The one comparator: run models over a picture set, compare each with a reference (``metrics.agreement``) and
apply a gate.

``sk-deploy verify`` holds the float32 graphs to PyTorch (``graph.verify``), the precision gates hold FP16/INT8
graphs to the float32 graph (``precision.accuracy``); both are this, with their own reference, runners and gate.
As Polygraphy's comparator, it is handed its runners and builds none: a runner (``Runner``) loads its model when
entered, says the input form it takes (float32 NCHW or uint8 NHWC crops) and gives logits; the runtime's
(``sk_deploy.runners``) and the PyTorch module's (``graph.verify``) are built by the caller.
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


class Runner(Protocol):
    """What the comparator runs: entering it loads the model (a session, an engine, a network) and leaving it
    frees it; while entered, ``input_dtype`` is the input it takes (``float32`` NCHW or ``uint8`` NHWC crops),
    ``max_batch`` the largest batch one call takes (None: any) and ``predict(batch)`` gives float32 logits."""

    @property
    def input_dtype(self) -> str: ...

    @property
    def max_batch(self) -> int | None: ...

    def predict(self, batch: np.ndarray) -> np.ndarray: ...

    def __enter__(self) -> Runner: ...

    def __exit__(self, *exc: object) -> None: ...


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


def logits_of(runner: Runner, batch_for: BatchFor, chunk: int = 8) -> np.ndarray:
    """Enter ``runner``, run the pictures ``batch_for`` gives in the form it takes, in chunks of ``chunk`` (or its
    ``max_batch``), and leave it: the logits."""
    with runner as active:
        batch = batch_for(active.input_dtype)
        step = active.max_batch or chunk
        return np.concatenate([active.predict(batch[i:i + step]) for i in range(0, len(batch), step)])


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
    logits: np.ndarray | None = field(default=None, repr=False)
    """the compared output itself"""

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
    return Comparison(name, figures, gate.failures(figures), seconds, output)


def compare_runners(reference: Runner, runners: dict[str, Runner], pictures: Pictures,
                    gate: Callable[[str], Gate]) -> list[Comparison]:
    """Run ``reference`` and every runner on ``pictures``, one at a time (each entered, run and left); compare
    each with the reference under ``gate(name)``."""
    expected = logits_of(reference, pictures.batch)
    results = []
    for name, runner in runners.items():
        start = time.perf_counter()
        output = logits_of(runner, pictures.batch)
        results.append(compare_logits(name, expected, output, gate(name), time.perf_counter() - start))
    return results
