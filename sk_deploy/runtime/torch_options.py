"""The PyTorch backend's settings, apart from the backend so that naming them imports no PyTorch (a Predictor
serving an ONNX graph, ``predict --bundle``, never needs it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TorchOptions:
    """``device`` (auto, cpu, cuda[:N]); channels_last memory format; FP16 autocast (CUDA only); and
    ``compile``: None for eager, or a ``torch.compile`` mode (``default``, ``reduce-overhead``, ``max-autotune``);
    ``tf32``: TensorFloat-32 convolutions and matmuls on a CUDA device (off otherwise: fp32 is IEEE fp32, while
    PyTorch defaults cuDNN's TF32 on)."""

    device: str = "auto"
    channels_last: bool = False
    fp16: bool = False
    compile: str | None = None
    tf32: bool = False
