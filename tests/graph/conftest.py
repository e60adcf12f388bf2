"""Helpers for the export and graph tests: realistic random networks, ONNX Runtime sessions, real photos."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

REPO_ROOT = Path(__file__).resolve().parents[2]


def calibrate_bn(model: nn.Module, input_shape: tuple[int, int, int], seed: int = 0) -> nn.Module:
    """Give every BatchNorm a random affine and running statistics measured on a forward pass.

    A freshly initialised network has BN stats (0, 1) that fit nothing, so its activations shrink layer by
    layer and its logits are tiny and nearly tied; after this they are O(1), like a trained network's, and the
    SK attention logits are spread out. The running variance is set to the second moment (variance + mean^2):
    a channel that barely varies across the random calibration batch (the pooled attention features do) would
    otherwise get a huge gain and amplify float rounding far beyond what a trained network does.
    Deterministic for a given seed. Returns the model in eval mode.
    """
    generator = torch.Generator().manual_seed(seed)
    norms = [module for module in model.modules() if isinstance(module, nn.BatchNorm2d)]
    for module in norms:
        channels = module.num_features
        with torch.no_grad():
            module.weight.copy_(torch.rand(channels, generator=generator) + 0.5)
            module.bias.copy_(torch.randn(channels, generator=generator) * 0.1)
        module.reset_running_stats()
        module.momentum = None  # cumulative average over the calibration pass
    model.train()
    with torch.no_grad():
        model(torch.randn(4, *input_shape, generator=generator))
        for module in norms:
            module.running_var += module.running_mean**2
    return model.eval()


@pytest.fixture(scope="session")
def legacy_skresnet18() -> tuple[nn.Module, onnx.ModelProto]:
    """skresnet18 at 64x64 (``calibrate_bn``, seed 0) and its legacy export, made once for the pass tests that read
    it (cleanup, fused preprocessing); the passes return new graphs and leave this one as it is."""
    from sk_deploy.graph.export import export_onnx
    from sk_deploy.models import create_model

    torch.manual_seed(0)
    model = calibrate_bn(create_model("skresnet18"), (3, 64, 64))
    raw, _ = export_onnx(model, (3, 64, 64), exporter="legacy")
    return model, raw


def session(model: onnx.ModelProto) -> ort.InferenceSession:
    """An ONNX Runtime CPU session of an in-memory model."""
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    """The first output of ``model`` on ``x`` (fed to its only input)."""
    sess = session(model)
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def torch_out(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """PyTorch output on a numpy batch."""
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def random_batch(n: int, shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A float32 standard-normal batch (n, *shape)."""
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)
