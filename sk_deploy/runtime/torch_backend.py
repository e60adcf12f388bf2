"""The PyTorch backend: the bundle's own network, eager or ``torch.compile``d, as the baseline to beat."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sk_deploy.graph.reference import build_reference
from sk_deploy.runtime.availability import BackendUnavailable, require_cuda
from sk_deploy.runtime.cuda_timing import CudaPhases
from sk_deploy.runtime.device import DeviceError, resolve_device


@dataclass(frozen=True)
class TorchOptions:
    """``device`` (auto, cpu, cuda[:N]); channels_last memory format; FP16 autocast (CUDA only); and
    ``compile``: None for eager, or a ``torch.compile`` mode (``default``, ``reduce-overhead``, ``max-autotune``)."""

    device: str = "auto"
    channels_last: bool = False
    fp16: bool = False
    compile: str | None = None


class TorchBackend:
    """The PyTorch network a bundle was exported from. ``run(batch) -> logits`` takes the bundle's input form:
    float32 NCHW, or uint8 NHWC crops when preprocessing is fused into the graph (normalised here)."""

    name = "torch"

    def __init__(self, manifest: dict[str, Any], bundle_dir: str | Path, options: TorchOptions | None = None) -> None:
        self.options = options or TorchOptions()
        try:
            self.device = resolve_device(self.options.device)
        except DeviceError as exc:
            raise BackendUnavailable(str(exc)) from None
        if self.options.fp16:
            require_cuda("PyTorch FP16 autocast")
            if self.device.type != "cuda":
                raise BackendUnavailable("PyTorch FP16 autocast runs on a CUDA device; pass device cuda")
        model = build_reference(manifest["model"]["name"], manifest["model"]["weights"], bundle_dir).eval()
        model = model.to(self.device)
        if self.options.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model: Any = torch.compile(model, mode=self.options.compile) if self.options.compile else model
        preprocess = manifest["preprocess"]
        self._fused = bool(preprocess.get("in_graph"))
        shape = (1, 3, 1, 1)
        self._mean = torch.tensor(preprocess["mean"], device=self.device).view(shape) * 255.0
        self._std = torch.tensor(preprocess["std"], device=self.device).view(shape) * 255.0

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if self._fused:  # uint8 NHWC crops -> normalised float NCHW, as the fused graph does
            x = (x.permute(0, 3, 1, 2).float() - self._mean) / self._std
        if self.options.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    @property
    def device_timing(self) -> bool:
        """Whether ``run_timed`` can split a run by the GPU's clock (on a CUDA device)."""
        return self.device.type == "cuda"

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits (float32) of ``batch``."""
        return self._run(batch, None)

    def run_timed(self, batch: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        """Logits of ``batch`` and the GPU's milliseconds for its phases: h2d (upload), compute (preprocessing
        when fused, and the network) and d2h (logits back), from CUDA events. CUDA devices only."""
        if not self.device_timing:
            raise BackendUnavailable("device-side timing needs a CUDA device; this network runs on the CPU")
        phases = CudaPhases()
        logits = self._run(batch, phases)
        return logits, phases.elapsed()

    def _run(self, batch: np.ndarray, phases: CudaPhases | None) -> np.ndarray:
        def mark() -> None:
            if phases is not None:
                phases.mark()

        mark()
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device, non_blocking=True)
        mark()
        with torch.inference_mode(), torch.autocast("cuda", torch.float16, enabled=self.options.fp16):
            y = self.model(self._prepare(x)).float()
        mark()
        out = y.cpu().numpy()
        mark()
        return out

    def close(self) -> None:
        """Release the network (and its device memory)."""
        del self.model
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
