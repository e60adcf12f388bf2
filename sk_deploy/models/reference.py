"""The PyTorch model a bundle was exported from, described in the manifest and rebuilt from that description.

Export and verification both go through here, so the reference that ``sk-deploy verify`` compares against is
built exactly as the exported one was: random weights from a recorded seed, a local checkpoint whose sha256
must still match, or the timm checkpoint from the Hugging Face hub.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from sk_deploy.bundle import sha256_file
from sk_deploy.models.registry import get_spec
from sk_deploy.models.weights import WeightsError, build_model

DEFAULT_SEED = 0


def describe_weights(weights: str | Path | None = None, pretrained: bool = False, seed: int = DEFAULT_SEED) -> dict:
    """The manifest's record of where the weights come from (checks that a weights file exists)."""
    if weights is not None and pretrained:
        raise WeightsError("give either a weights file or pretrained, not both")
    if weights is not None:
        path = Path(weights).expanduser().resolve()
        if not path.is_file():
            raise WeightsError(f"{path}: no such checkpoint file")
        return {"source": "file", "path": str(path), "sha256": sha256_file(path)}
    if pretrained:
        return {"source": "pretrained"}
    return {"source": "random", "seed": seed}


def build_reference(model_name: str, weights: dict[str, Any], bundle_dir: str | Path | None = None) -> nn.Module:
    """Build ``model_name`` (eval mode) with the weights ``describe_weights`` recorded.

    Weights adjusted at export (``--recompute-bn``) live in the bundle itself (source ``bundle``): they are
    read from ``bundle_dir``.
    """
    source = weights.get("source")
    if source == "bundle":
        if bundle_dir is None:
            raise WeightsError("these weights live in the bundle: give the bundle directory")
        path = Path(bundle_dir) / str(weights["file"])
        if not path.is_file():
            raise WeightsError(f"{path}: the bundle's weights file is missing")
        if weights.get("sha256") and sha256_file(path) != weights["sha256"]:
            raise WeightsError(f"{path}: sha256 differs from the manifest (file changed after export)")
        return build_model(model_name, weights=path)
    if source == "random":
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(weights.get("seed", DEFAULT_SEED)))
            return build_model(model_name)
    if source == "file":
        path = Path(weights["path"])
        if not path.is_file():
            raise WeightsError(f"{path}: the checkpoint this bundle was exported from is gone; pass --weights PATH")
        expected = weights.get("sha256")
        if expected and sha256_file(path) != expected:
            raise WeightsError(f"{path}: checkpoint changed since export (sha256 differs); pass --weights PATH")
        return build_model(model_name, weights=path)
    if source == "pretrained":
        get_spec(model_name)
        return build_model(model_name, pretrained=True)
    raise WeightsError(f"unknown weights source {source!r} in the manifest")
