"""``sk-deploy export``: a registered model -> a verified bundle with ``model.raw.onnx`` and ``model.onnx``.

Order: check every option and the output directory (before any heavy work), build the PyTorch model, export
the raw graph, optimise it (``graph.passes.optimize``), write both files and the manifest into a staging
directory beside the target, verify against PyTorch, and rename the staging directory into place.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from sk_deploy.bundle import MODEL_FILE, RAW_FILE, Bundle, check_target, sha256_file, staging
from sk_deploy.compare import image_files
from sk_deploy.graph.describe import io_description
from sk_deploy.graph.export import ExportError, check_opset, export_onnx, save_model
from sk_deploy.graph.passes import optimize
from sk_deploy.graph.verify import OnnxRunner, VerifyReport, verify_bundle
from sk_deploy.images import Preprocess
from sk_deploy.models.reference import build_reference, describe_weights
from sk_deploy.models.registry import ModelSpec, get_spec
from sk_deploy.settings.graph import ExportSettings

WEIGHTS_FILE = "weights.safetensors"
LABELS = {"source": "imagenet-1k", "file": "sk_deploy/data/imagenet_synsets.txt", "classes": 1000}


@dataclass(frozen=True)
class BatchProfile:
    """The batch sizes a deployment should serve: smallest, most common, largest (TensorRT profiles use it)."""

    min: int
    opt: int
    max: int

    @classmethod
    def parse(cls, text: str) -> BatchProfile:
        """``"MIN:OPT:MAX"`` (or one number for all three), each >= 1 and MIN <= OPT <= MAX."""
        if not re.fullmatch(r"\d+(:\d+:\d+)?", text.strip()):
            raise ExportError(f"batch {text!r} is not MIN:OPT:MAX (for example 1:8:32)")
        parts = [int(p) for p in text.strip().split(":")]
        low, opt, high = parts if len(parts) == 3 else parts * 3
        if not 1 <= low <= opt <= high:
            raise ExportError(f"batch {text!r} must satisfy 1 <= MIN <= OPT <= MAX")
        return cls(low, opt, high)


def resolve_input(spec: ModelSpec, input_size: tuple[int, int] | None) -> tuple[tuple[int, int, int], Preprocess]:
    """The (C, H, W) to export at and the preprocessing that produces it (crop ratio kept from the spec)."""
    if input_size is None:
        return spec.input_size, spec.preprocess
    height, width = input_size
    if height != width:
        raise ExportError(f"--input-size {height} {width}: only square inputs are supported (the crop is square)")
    if not 32 <= height <= 2048:
        raise ExportError(f"--input-size {height}: use 32 to 2048 pixels")
    base = spec.preprocess
    resize = max(height, round(height * base.resize / base.crop))
    preprocess = Preprocess(resize=resize, crop=height, interpolation=base.interpolation, mean=base.mean, std=base.std)
    return (spec.input_size[0], height, width), preprocess


def _model_record(spec: ModelSpec, weights: dict[str, Any]) -> dict[str, Any]:
    if weights["source"] == "pretrained":
        weights = {**weights, "hub_id": spec.hub_id}
    return {"name": spec.name, "description": spec.description, "weights": weights}


def _calibrate_bn(
    model: nn.Module, weights: dict[str, Any], files: list[Path], count: int, preprocess: Preprocess, stage: Path
) -> dict[str, Any]:
    """Recompute the model's BatchNorm statistics on ``count`` of ``files`` (a fixed-seed choice), save the
    resulting weights in the bundle, and return the manifest's record of them.

    Random weights also get their residual branches scaled (``models.bn_stats``), the trained-like regime
    that FP16/INT8 figures need; trained weights keep theirs and only get new statistics.
    """
    import random

    import torch
    from safetensors.torch import save_file

    from sk_deploy.images import load_batch
    from sk_deploy.models.bn_stats import RESIDUAL_GAIN, make_realistic, recompute_bn_statistics

    chosen = sorted(random.Random(0).sample(files, min(count, len(files))))
    batches = (torch.from_numpy(load_batch(chosen[i:i + 16], preprocess)) for i in range(0, len(chosen), 16))
    random_weights = weights["source"] == "random"
    seen = make_realistic(model, batches) if random_weights else recompute_bn_statistics(model, batches)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, stage / WEIGHTS_FILE)
    return {
        "source": "bundle", "file": WEIGHTS_FILE, "sha256": sha256_file(stage / WEIGHTS_FILE), "base": weights,
        "bn_statistics": {"images": seen, "folder": str(files[0].parent),
                          "residual_gain": RESIDUAL_GAIN if random_weights else None},
    }


def export_bundle(
    request: ExportSettings, progress: Callable[[str], None] = lambda message: None,
    onnx_runner: OnnxRunner | None = None,
) -> tuple[Bundle, VerifyReport | None]:
    """Export ``request.model`` into a bundle at ``request.out``; returns the bundle and the verification, which
    runs each graph on ``onnx_runner(path)`` (the caller's: ``sk_deploy.runners.onnx_cpu_runner``).

    Raises UnknownModelError, WeightsError, ExportError or BundleError with a message for a person; on any
    error nothing is left at ``request.out`` that was not there before.
    """
    if request.verify and onnx_runner is None:
        raise ValueError("export_bundle verifies each graph on the runner its caller gives: pass onnx_runner "
                         "(sk_deploy.runners.onnx_cpu_runner), or verify=False")
    spec = get_spec(request.model)
    check_opset(request.opset)
    input_shape, preprocess = resolve_input(spec, request.input_size)
    target = check_target(request.out, request.force)
    weights = describe_weights(request.weights, request.pretrained)
    if request.verify and request.images is not None:
        image_files(request.images)  # a bad folder fails now, not after the export
    if request.recompute_bn and request.images is None:
        raise ExportError("--recompute-bn takes its photos from --images: add --images DIR")
    bn_files = image_files(request.images, limit=None) if request.recompute_bn else []
    profile = BatchProfile.parse(request.batch_profile)

    progress(f"building {spec.name}")
    model = build_reference(spec.name, weights)
    with staging(target, request.force) as stage:
        if bn_files:
            progress(f"recomputing BatchNorm statistics on {min(len(bn_files), request.recompute_bn_count)} photos")
            weights = _calibrate_bn(model, weights, bn_files, request.recompute_bn_count, preprocess, stage)
        bundle = Bundle.new(stage, _model_record(spec, weights))
        if bn_files:
            bundle.add_file(WEIGHTS_FILE, role="weights")
        progress(f"exporting with the {request.exporter} exporter (opset {request.opset})")
        raw, info = export_onnx(model, input_shape, request.exporter, request.opset)
        save_model(raw, stage / RAW_FILE)
        bundle.add_file(RAW_FILE, role="raw", input=io_description(raw.graph.input)[0],
                        nodes=len(raw.graph.node))
        bundle.record("export", info.to_dict())

        progress("optimising the graph (cleanup, SK select, cleanup)")
        try:
            clean, reports = optimize(raw, preprocess if request.fuse_preprocess else None)
        except ExportError:
            raise
        except Exception as exc:  # onnxslim, onnxscript and the checker raise many unrelated types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ExportError(f"optimising the exported graph failed: {type(exc).__name__}: {first[:300]}") from exc
        save_model(clean, stage / MODEL_FILE)
        described_input = io_description(clean.graph.input)[0]
        bundle.add_file(MODEL_FILE, role="model", input=described_input, nodes=len(clean.graph.node))
        bundle.record("optimize", reports)

        batch = {"min": profile.min, "opt": profile.opt, "max": profile.max}
        bundle.describe_io(
            input={**described_input, "layout": "NHWC" if request.fuse_preprocess else "NCHW", "batch": batch},
            output=io_description(clean.graph.output)[0],
            preprocess={**preprocess.to_dict(), "in_graph": request.fuse_preprocess}, labels=dict(LABELS),
        )
        bundle.save()

        report = None
        if request.verify:
            progress("verifying against PyTorch")
            report = verify_bundle(bundle, model, onnx_runner, images=request.images)  # type: ignore[arg-type]
    bundle.path = target
    return bundle, report
