"""Realistic bundles for the runtime, service and deployment tests: exported at a reduced size from networks with
realistic activations (the fixtures that hand them out are in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from sk_deploy.bundle import Bundle
from sk_deploy.graph.pipeline import export_bundle
from sk_deploy.models import create_model, get_spec, list_models
from sk_deploy.settings.graph import ExportSettings
from tests.graph.conftest import calibrate_bn

SIZE = 64


def realistic_bundle(name: str, folder: Path, size: int = SIZE, fuse_preprocess: bool = False,
                     exporter: str = "legacy") -> Bundle:
    """Export ``name`` at ``size`` from weights with O(1) activations (``calibrate_bn``) saved as a checkpoint,
    so the torch backend rebuilds exactly the exported network and the logits are not nearly tied.

    The legacy exporter by default: after the cleanup its graph is the dynamo exporter's node for node (the same
    145 nodes for skresnet18), in a fifth of the time (2 s against 16 s on two cores). The dynamo exporter makes
    each design's plain bundle (``BundleCache``), which is how every design meets it through the runtime."""
    torch.manual_seed(0)
    model = calibrate_bn(create_model(name), (get_spec(name).input_size[0], size, size))
    weights = folder / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
    request = ExportSettings(model=name, out=folder / f"{name}-bundle", weights=weights, input_size=(size, size),
                             fuse_preprocess=fuse_preprocess, exporter=exporter, verify=False)
    bundle, _ = export_bundle(request)
    return bundle


def one_model_per_design() -> list[str]:
    """The shallowest registered model of each design: within a design the networks share the builder, the block,
    its widths and its arguments, and differ only in how many blocks each stage repeats (SKNet-26/50/101,
    SK-ResNet-18/34). What exporting, cleaning or running one block proves holds for its deeper siblings, at a
    fraction of the time (SKNet-101 has 33 blocks); a design registered later is in the list by itself."""
    shallowest: dict[str, str] = {}
    for name in list_models():
        spec = get_spec(name)
        design = repr((spec.build, sorted((k, v) for k, v in spec.kwargs.items() if k != "layers")))
        kept = shallowest.setdefault(design, name)
        if sum(spec.kwargs["layers"]) < sum(get_spec(kept).kwargs["layers"]):
            shallowest[design] = name
    return list(shallowest.values())


class BundleCache:
    """Realistic bundles made once per test run, by model name and input form: each design's plain bundle by the
    dynamo exporter (the default a user gets), the fused-preprocessing variants by the legacy one.

    ``folder`` may be shared by pytest-xdist's workers: the first to ask for a bundle makes it under a file lock,
    the others wait and open it (the pattern pytest-xdist's documentation gives for session fixtures)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.made: dict[tuple[str, bool], Bundle] = {}

    def get(self, name: str, fuse_preprocess: bool = False) -> Bundle:
        """The bundle of ``name`` at 64x64 (exported on first use in this run)."""
        from filelock import FileLock

        key = (name, fuse_preprocess)
        if key not in self.made:
            folder = self.folder / f"{name}{'-fused' if fuse_preprocess else ''}"
            self.folder.mkdir(parents=True, exist_ok=True)
            with FileLock(str(folder) + ".lock"):
                done = folder / "made"
                if done.exists():
                    self.made[key] = Bundle.open(folder / f"{name}-bundle")
                else:
                    folder.mkdir(exist_ok=True)
                    self.made[key] = realistic_bundle(name, folder, fuse_preprocess=fuse_preprocess,
                                                      exporter="legacy" if fuse_preprocess else "dynamo")
                    done.touch()
        return self.made[key]
