"""``sk-deploy models`` and ``sk-deploy predict``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sk_deploy.cli import render
from sk_deploy.cli.common import err_console, fail, note, waiting
from sk_deploy.cli.options import command
from sk_deploy.errors import SkDeployError
from sk_deploy.settings.models import ModelsSettings, PredictSettings

if TYPE_CHECKING:
    import numpy as np


@command(ModelsSettings)
def models_command(settings: ModelsSettings) -> None:
    """List the registered networks: parameters, GMACs at the default size, input size, pretrained source."""
    from sk_deploy.models import get_spec, list_models
    from sk_deploy.models.profile import network_size

    rows = []
    for name in list_models():
        spec = get_spec(name)
        params, macs = network_size(name, settings.gmacs)
        rows.append((name, f"{params / 1e6:.2f}M", f"{macs / 1e9:.2f}" if macs is not None else "-",
                     "x".join(map(str, spec.input_size)), spec.hub_id or "-"))
    if settings.as_json:
        keys = ("name", "params", "gmacs", "input", "pretrained")
        render.as_json([dict(zip(keys, row, strict=True)) for row in rows])
        return
    render.models_table(rows)


@command(PredictSettings)
def predict_command(settings: PredictSettings) -> None:
    """Classify images and print the top-k labels and probabilities: a model in PyTorch, or a bundle's graph or
    TensorRT engine on the backend --backend names (auto: the fastest this machine can run)."""
    from sk_deploy.labels import imagenet_labels
    from sk_deploy.runtime.classify import top_k as rank

    images, model, bundle, backend, precision = (list(settings.images), settings.model, settings.bundle,
                                                 settings.backend, settings.precision)
    weights, pretrained, device = settings.weights, settings.pretrained, settings.device
    if bundle is not None:
        if model is not None or weights is not None or pretrained:
            raise fail("--bundle runs the bundle's own model: leave out --model, --weights and --pretrained")
        logits, info, random_weights = _predict_bundle(images, bundle, backend, precision, device)
    else:
        if backend != "auto" or precision != "auto":
            raise fail("--backend and --precision apply to a bundle: add --bundle DIR (see sk-deploy export)")
        model = model or "sknet50"
        logits, info = _predict_model(images, model, weights, pretrained, device)
        random_weights = weights is None and not pretrained
    if random_weights:
        note(f"{info['model']} has random weights: labels are meaningless")
    results = rank(logits, settings.top_k, imagenet_labels())
    if settings.as_json:
        from dataclasses import asdict

        from sk_deploy.jsonout import dumps

        payload = [{"image": str(path), **info, "predictions": [asdict(p) for p in ranked]}
                   for path, ranked in zip(images, results, strict=True)]
        print(dumps(payload, indent=2))
        return
    for path, ranked in zip(images, results, strict=True):
        # what ran, the file included: model, backend, precision or device, and the graph or engine of the bundle
        render.predictions_table(str(path), ", ".join(str(v) for k, v in info.items() if k != "bundle"), ranked)


def _predict_model(
    images: list[Path], model: str, weights: Path | None, pretrained: bool, device: str
) -> tuple[np.ndarray, dict[str, str]]:
    """Logits of ``images`` from a registered model in PyTorch, and what ran (model, backend, device)."""
    from sk_deploy.runtime.torch_backend import network_logits

    try:
        with waiting(f"loading {model}..."):
            logits, target = network_logits(list(images), model, weights, pretrained, device)
    except SkDeployError as exc:
        raise fail(str(exc)) from None
    return logits, {"model": model, "backend": "torch", "device": target}


def _predict_bundle(
    images: list[Path], bundle_dir: Path, backend: str, precision: str, device: str
) -> tuple[np.ndarray, dict[str, str], bool]:
    """Logits of ``images`` from a bundle through the Predictor, what ran (model, backend, precision, file),
    and whether the weights are random."""
    from sk_deploy.bundle import is_trained
    from sk_deploy.images import load_batch
    from sk_deploy.runtime.predictor import Predictor
    from sk_deploy.runtime.torch_options import TorchOptions

    try:
        with waiting(f"loading {bundle_dir} ({backend})..."):
            predictor = Predictor(bundle_dir, backend, precision, torch=TorchOptions(device=device,
                                                                                   fp16=precision == "fp16"))
        opened = predictor.bundle
        batch = load_batch(list(images), opened.preprocess, uint8_nhwc=predictor.input_spec.dtype == "uint8")
        with predictor:
            logits = predictor.predict(batch)
    except SkDeployError as exc:
        raise fail(str(exc)) from None
    if backend == "auto":
        err_console.print(f"[dim]backend {predictor.backend}: {predictor.reason}[/]", highlight=False,
                          soft_wrap=True)
    err_console.print(f"[dim]precision {predictor.precision_choice.reason}[/]", highlight=False, soft_wrap=True)
    render.faster_tip(opened, predictor.backend, precision, predictor.machine)
    info = {"model": opened.model_name, "backend": predictor.backend, "precision": predictor.precision,
            "bundle": str(bundle_dir), "file": predictor.file or "(PyTorch network)"}
    return logits, info, not is_trained(opened.weights)
