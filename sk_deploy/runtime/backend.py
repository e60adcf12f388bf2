"""The base every backend shares, in the spirit of Polygraphy's runners: one constructor shape, ``run``,
``run_timed`` (refused unless the backend can split a run by the device's clock), capabilities as attributes,
and an idempotent ``close`` that frees what the backend holds.

A backend runs one model file of a bundle (an ONNX graph or a TensorRT engine) or, for ``torch``, the bundle's
own network (``path`` None). It takes the array the bundle's model takes (the Predictor checks it first) and
gives float32 logits.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from sk_deploy.machine import BackendUnavailable

if TYPE_CHECKING:
    from sk_deploy.bundle import Bundle


class Backend(ABC):
    """One model on one runtime. Subclasses set ``name`` and implement ``run`` and ``_release``.

    Constructor: ``Backend(path, bundle, precision=..., options=...)``: ``path`` the file to run (None for a
    backend that builds the network itself), ``bundle`` the bundle it comes from (None for a bare file),
    ``precision`` what was asked for, ``options`` the backend's own options dataclass (None: its defaults).
    """

    name: ClassVar[str]
    #: ``run_timed`` splits a run into h2d / compute / d2h by the device's clock (a backend whose answer
    #: depends on where it runs sets it per instance).
    device_timing: bool = False
    #: the largest batch one ``run`` takes (an engine's profile), None for any.
    max_batch: int | None = None
    #: the precision the runtime says it compiled the model in, where it reports one (OpenVINO), else None.
    compiled_precision: str | None = None
    #: the backend captures a CUDA graph per batch shape (set per instance by those that can): a server pads
    #: batches to a few sizes for it, so that few graphs are captured.
    captures_graphs: bool = False
    #: ``resident`` runs a batch already on the device (GPU backends)
    runs_resident: bool = False

    @classmethod
    def default_options(cls, precision: str, cuda_graph: bool = False) -> Any:
        """The backend's options for ``precision`` when none are given (None: the constructor's defaults)."""
        return None

    @classmethod
    def share_cores(cls, options: Any, instances: int, cores: int) -> Any:
        """``options`` for one of ``instances`` instances running in parallel on ``cores`` cores; a backend whose
        table entry runs several instances says how it shares them."""
        raise NotImplementedError(f"{cls.__name__} runs one instance")

    def __init__(self, path: str | Path | None, bundle: Bundle | None = None, *, precision: str = "fp32",
                 options: Any = None) -> None:
        self.path = Path(path) if path is not None else None
        self.bundle = bundle
        self.precision = precision
        self.options = options
        self._closed = False

    @property
    def input_dtype(self) -> str:
        """The input the model takes: ``float32`` (NCHW) or ``uint8`` (NHWC crops, preprocessing in the graph), as
        the bundle records it for this file (float32 without a bundle)."""
        if self.bundle is None:
            return "float32"
        described = self.bundle.manifest_input()
        if self.path is not None and self.bundle.has(self.path.name):
            described = self.bundle.entry(self.path.name).get("input") or described
        return str(described.get("dtype", "float32"))

    @abstractmethod
    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits (N, classes) float32 of ``batch``, an array of the model's input form."""

    def run_timed(self, batch: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        """Logits and the device's milliseconds per phase; refused by backends without ``device_timing``."""
        raise BackendUnavailable(f"{self.name} exposes no device-side split of a run")

    def resident(self, batch: np.ndarray) -> Callable[[], None]:
        """A call that runs ``batch``, copied to the device once here, with no host copy (its output stays on
        the device): device-resident timing. Refused by backends without ``runs_resident``."""
        raise BackendUnavailable(f"{self.name} offers no device-resident run")

    def _release(self) -> None:  # noqa: B027 (a hook: backends holding nothing need not override it)
        """Free what the backend holds (sessions, engines, device buffers); called once by ``close``."""

    def close(self) -> None:
        """Free what the backend holds; a second call does nothing."""
        if not self._closed:
            self._closed = True
            self._release()

    @property
    def closed(self) -> bool:
        """Whether ``close`` has run."""
        return self._closed

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
