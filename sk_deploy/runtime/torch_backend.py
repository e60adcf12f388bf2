"""The PyTorch backend: the bundle's own network, eager or ``torch.compile``d, as the baseline to beat."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sk_deploy.machine import BackendUnavailable, require_cuda
from sk_deploy.models.reference import build_reference, describe_weights
from sk_deploy.runtime.backend import Backend
from sk_deploy.runtime.cuda_timing import CudaPhases
from sk_deploy.runtime.device import DeviceError, resolve_device
from sk_deploy.runtime.torch_options import TorchOptions

if TYPE_CHECKING:
    from sk_deploy.bundle import Bundle


class TorchBackend(Backend):
    """The PyTorch network a bundle was exported from (``path`` None: it builds the network itself). ``run(batch)
    -> logits`` takes the bundle's input form: float32 NCHW, or uint8 NHWC crops when preprocessing is fused into
    the graph (normalised here)."""

    name = "torch"

    @classmethod
    def default_options(cls, precision: str, cuda_graph: bool = False) -> TorchOptions:
        """The options for ``precision`` when none are given (float16 autocast, TensorFloat-32)."""
        return TorchOptions(fp16=precision == "fp16", tf32=precision == "tf32")

    def __init__(self, path: str | Path | None, bundle: Bundle | None = None, *, precision: str = "fp32",
                 options: TorchOptions | None = None) -> None:
        if bundle is None:
            raise ValueError("the torch backend rebuilds a bundle's network: give the bundle")
        options = options or TorchOptions(fp16=precision == "fp16")
        super().__init__(path, bundle, precision=precision, options=options)
        self.options: TorchOptions = options
        try:
            self.device = resolve_device(self.options.device)
        except DeviceError as exc:
            raise BackendUnavailable(str(exc)) from None
        if self.options.fp16:
            require_cuda("PyTorch FP16 autocast")
            if self.device.type != "cuda":
                raise BackendUnavailable("PyTorch FP16 autocast runs on a CUDA device; pass device cuda")
        if self.options.tf32 and self.device.type != "cuda":
            raise BackendUnavailable("tf32 is TensorFloat-32 arithmetic of NVIDIA GPUs; the torch backend runs on "
                                     "the CPU here, which has none: ask for fp32")
        if self.device.type == "cuda":
            set_tf32(self.options.tf32)
        model = build_reference(bundle.model_name, bundle.weights, bundle.path).eval()
        model = model.to(self.device)
        if self.options.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model: Any = torch.compile(model, mode=self.options.compile) if self.options.compile else model
        preprocess = bundle.preprocess
        self._fused = bundle.preprocess_in_graph
        shape = (1, 3, 1, 1)
        self._mean = torch.tensor(preprocess.mean, device=self.device).view(shape) * 255.0
        self._std = torch.tensor(preprocess.std, device=self.device).view(shape) * 255.0
        #: the GPU's clock splits a run only on a CUDA device
        self.device_timing = self.runs_resident = self.device.type == "cuda"
        #: reduce-overhead records a CUDA graph per input shape (and falls back to eager past its recompile
        #: limit): batches are best padded to a few sizes
        self.captures_graphs = self.options.compile == "reduce-overhead" and self.device.type == "cuda"

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if self._fused:  # uint8 NHWC crops -> normalised float NCHW, as the fused graph does
            x = (x.permute(0, 3, 1, 2).float() - self._mean) / self._std
        if self.options.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

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

    def resident(self, batch: np.ndarray) -> Callable[[], None]:
        """A run on ``batch`` moved to the CUDA device once, its logits left there (synchronised)."""
        if not self.runs_resident:
            return super().resident(batch)
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(self.device)

        def run() -> None:
            with torch.inference_mode(), torch.autocast("cuda", torch.float16, enabled=self.options.fp16):
                self.model(self._prepare(x))
            torch.cuda.synchronize(self.device)

        return run

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

    def _release(self) -> None:
        """Release the network (and its device memory)."""
        self.model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()


def set_tf32(enabled: bool) -> None:
    """TensorFloat-32 in cuDNN convolutions and CUDA matmuls on or off. The flags are process-wide: the last
    backend opened sets them (one process serves one precision)."""
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def network_logits(images: list[Path], model: str, weights: Path | None = None, pretrained: bool = False,
                   device: str = "auto") -> tuple[np.ndarray, str]:
    """Logits of the pictures ``images`` from the registered network ``model`` (its own preprocessing), run in
    PyTorch on ``device``; and the device it ran on."""
    from sk_deploy.images import load_batch
    from sk_deploy.models import get_spec

    spec = get_spec(model)
    target = resolve_device(device)
    if target.type == "cuda":
        set_tf32(False)  # the reference is IEEE fp32
    batch = load_batch(list(images), spec.preprocess)
    # the one build path export and verify take: random weights come from the same recorded seed
    net = build_reference(model, describe_weights(weights, pretrained)).to(target)
    with torch.inference_mode():
        logits = net(torch.from_numpy(batch).to(target)).float().cpu().numpy()
    return logits, str(target)
