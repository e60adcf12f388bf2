"""Choosing the PyTorch device."""

from __future__ import annotations

import torch

from sk_deploy.errors import SkDeployError


class DeviceError(SkDeployError, RuntimeError):
    """A device that this machine does not have."""


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> the first CUDA GPU when there is one, else the CPU; ``cuda``/``cuda:N``/``cpu`` as asked."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DeviceError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {name} asked for, but PyTorch sees no CUDA GPU on this machine "
                              f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'})")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"device {name} asked for, but this machine has {torch.cuda.device_count()} GPU(s)")
    elif device.type != "cpu":
        raise DeviceError(f"unsupported device {name!r}; use auto, cpu, cuda or cuda:N")
    return device
