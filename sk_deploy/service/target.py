"""What ``sk-deploy serve`` was given: a bundle directory, or a model name to export into a cached bundle."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from sk_deploy.bundle import Bundle, BundleError


def default_cache() -> Path:
    """Where bundles exported for ``serve MODEL`` are kept: ``$SK_DEPLOY_CACHE`` or ~/.cache/sk-deploy/bundles."""
    return Path(os.environ.get("SK_DEPLOY_CACHE", Path.home() / ".cache" / "sk-deploy")) / "bundles"


def open_target(target: str, weights: Path | None = None, pretrained: bool = False) -> Bundle | None:
    """The bundle ``target`` names (a directory), or None for a registered model name; a BundleError for anything
    else, before any slow work (a model name imports the exporter's modules, PyTorch among them: a bundle never
    does)."""
    path = Path(target).expanduser()
    if path.is_dir() or os.sep in target or target.startswith("."):
        if weights is not None or pretrained:
            raise BundleError("--weights and --pretrained apply to a model name; a bundle holds its own weights")
        return Bundle.open(path)  # a clear error now rather than after the server starts
    from sk_deploy.models import list_models

    if target not in list_models():
        raise BundleError(f"{target!r} is neither a bundle directory nor a registered model "
                          f"(models: {', '.join(list_models())})")
    return None


def resolve_target(target: str, weights: Path | None = None, pretrained: bool = False, cache: Path | None = None,
                   progress: Callable[[str], None] = lambda _: None) -> tuple[Bundle, bool]:
    """The bundle to serve for ``target`` and whether it was exported just now: ``open_target``'s bundle, or
    ``export_target``'s for a model name."""
    bundle = open_target(target, weights, pretrained)
    if bundle is not None:
        return bundle, False
    return export_target(target, weights, pretrained, cache, progress)


def export_target(target: str, weights: Path | None = None, pretrained: bool = False, cache: Path | None = None,
                  progress: Callable[[str], None] = lambda _: None) -> tuple[Bundle, bool]:
    """The bundle of the registered model ``target`` (``open_target`` said it is one) and whether it was exported
    just now: exported (cleaned, verified, and its bf16 gate measured where the CPU computes bfloat16 natively)
    into ``cache/<name>`` unless a bundle of that model with the same weights is already there."""
    from sk_deploy.graph.pipeline import export_bundle
    from sk_deploy.models.reference import describe_weights
    from sk_deploy.precision.pipeline import gate_bf16_where_native
    from sk_deploy.runners import onnx_cpu_runner
    from sk_deploy.settings.graph import ExportSettings

    out = (cache or default_cache()) / target
    wanted = describe_weights(weights, pretrained)  # a changed checkpoint (sha256) is exported again
    try:
        cached = Bundle.open(out)
        held = cached.weights
        if cached.model_name == target and all(held.get(k) == v for k, v in wanted.items()):
            return cached, False
    except (BundleError, KeyError):
        pass
    progress(f"exporting {target} to {out}")
    bundle, _ = export_bundle(ExportSettings(model=target, out=out, weights=weights, pretrained=pretrained, force=True),
                              progress=progress, onnx_runner=onnx_cpu_runner)
    # as `sk-deploy export` does: the bf16 gate where this CPU computes bfloat16 natively, so auto may serve it
    result = gate_bf16_where_native(bundle.path, progress=lambda message, total: progress(f"bf16 gate: {message}"))
    return (Bundle.open(bundle.path) if not isinstance(result, str) else bundle), True
