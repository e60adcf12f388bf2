"""Size and cost of a network: parameters and multiply-accumulates."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Number of parameters (BatchNorm running statistics are buffers and not counted)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_size: tuple[int, int, int] = (3, 224, 224)) -> int:
    """Multiply-accumulates of one forward pass at batch 1, counted by PyTorch's FlopCounterMode.

    It counts convolutions and matrix products (2 FLOPs per MAC), as the papers' GMACs figures do;
    element-wise work (BN, ReLU, softmax, pooling) is not included.
    """
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.zeros(1, *input_size))
    return counter.get_total_flops() // 2


def network_size(name: str, macs: bool = True) -> tuple[int, int | None]:
    """(parameters, multiply-accumulates at its default input size, or None unless ``macs``) of the registered
    model ``name``, counted on PyTorch's meta device: shapes only, no weight allocated, initialised or multiplied,
    the same figures as on the CPU in half the time."""
    from sk_deploy.models.registry import create_model, get_spec

    with torch.device("meta"):
        model = create_model(name)
        return count_params(model), count_macs(model, get_spec(name).input_size) if macs else None
