"""The comparator's runners over the backend table: a backend of the table on one file, opened (through the
class its entry names) when the comparison enters it, so one model is loaded at a time, and closed after;
``ort_logits`` for a bare ONNX file on the reference backend (ONNX Runtime's CPU provider), which every
precision is held to. No runtime module is imported here: the stages below the runtime (graph, precision) and
the callers that hand ``graph.verify`` its runners use these.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sk_deploy.backends import REFERENCE, backend
from sk_deploy.compare import BatchFor, VerifyError, logits_of

if TYPE_CHECKING:
    from sk_deploy.bundle import Bundle


class BackendRunner:
    """``name`` (a backend of the table) on the file ``path`` at ``precision``, as a comparator runner: opened
    with ``options`` (None: its default options) when entered, closed when left."""

    def __init__(self, name: str, path: str | Path, bundle: Bundle | None = None, precision: str = "fp32",
                 options: Any = None) -> None:
        self.spec = backend(name)
        self.path, self.bundle, self.precision, self.options = Path(path), bundle, precision, options
        self._backend: Any = None

    def __enter__(self) -> BackendRunner:
        options = self.options if self.options is not None else self.spec.default_options(self.precision)
        self._backend = self.spec.open(self.path, self.bundle, self.precision, options)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None

    @property
    def input_dtype(self) -> str:
        """The input the opened model takes: ``float32`` or ``uint8``."""
        return self._backend.input_dtype

    @property
    def max_batch(self) -> int | None:
        """The largest batch one run takes (an engine's profile), None for any."""
        return self._backend.max_batch

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Logits of ``batch``; a run that fails (a shape or type the model refuses) is a VerifyError."""
        try:
            return self._backend.run(batch)
        except Exception as exc:
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise VerifyError(f"{self.path}: {self.spec.name} cannot run it ({first})") from None


def onnx_cpu_runner(path: str | Path) -> BackendRunner:
    """An ONNX file on the reference backend (ONNX Runtime's CPU provider) as a comparator runner."""
    return BackendRunner(REFERENCE, path)


def ort_logits(path: str | Path, batch_for: BatchFor, chunk: int = 8) -> np.ndarray:
    """Logits of an ONNX file from ONNX Runtime (CPU); ``batch_for("uint8" | "float32")`` gives its input."""
    return logits_of(onnx_cpu_runner(path), batch_for, chunk)
