"""``sk-deploy export``, ``sk-deploy verify`` and ``sk-deploy inspect``: the bundle's graphs."""

from __future__ import annotations

from typing import Any

from sk_deploy.cli import render
from sk_deploy.cli.common import console, err_console, fail, note, one_number_profile, waiting
from sk_deploy.cli.options import command
from sk_deploy.errors import SkDeployError
from sk_deploy.settings.graph import ExportSettings, InspectSettings, VerifySettings


@command(ExportSettings)
def export_command(settings: ExportSettings) -> None:
    """Export a model to a bundle: model.raw.onnx (exporter output), model.onnx (cleaned), manifest.json."""
    from sk_deploy.graph.pipeline import export_bundle
    from sk_deploy.runners import onnx_cpu_runner

    one_number_profile(settings.batch_profile)
    model = settings.model
    try:
        with waiting(f"exporting {model}...") as status:
            bundle, report = export_bundle(settings, progress=lambda message: status.update(f"{model}: {message}..."),
                                           onnx_runner=onnx_cpu_runner)
    except SkDeployError as exc:
        raise fail(str(exc)) from None
    if settings.weights is None and not settings.pretrained:
        note(f"{model} has random weights (no --weights or --pretrained)")
    if settings.as_json:
        render.as_json({"bundle": str(bundle.path), "files": bundle.file_entries(), "verify": report})
    else:
        render.bundle_table(bundle)
        if report is not None:
            render.verify_table(report)
    if report is not None and not report.passed:
        raise fail(f"verification failed; the bundle is at {bundle.path} (see manifest.json, stages.verify)")
    render.bf16_gate(bundle.path, settings.images)


@command(VerifySettings)
def verify_command(settings: VerifySettings) -> None:
    """Compare every ONNX file of a bundle with PyTorch on pictures; exit 1 if any misses a threshold."""
    from sk_deploy.bundle import Bundle
    from sk_deploy.graph.foreign import is_imported
    from sk_deploy.graph.verify import Thresholds, verify_bundle
    from sk_deploy.models.reference import build_reference, describe_weights
    from sk_deploy.precision.accuracy import check_precision_files
    from sk_deploy.precision.backends import check_backends
    from sk_deploy.runners import onnx_cpu_runner

    images, limit, weights = settings.images, settings.limit, settings.weights
    try:
        bundle = Bundle.open(settings.bundle)
        source = describe_weights(weights) if weights is not None else bundle.weights
        with waiting(f"verifying {settings.bundle}..."):
            # an imported bundle's reference is its input graph (model.raw.onnx), not a PyTorch network
            model = None if is_imported(bundle) and weights is None else build_reference(
                bundle.model_name, source, bundle.path)
            report = verify_bundle(bundle, model, onnx_cpu_runner, images=images, limit=limit,
                                   thresholds=Thresholds(settings.max_abs, settings.min_cosine, settings.min_top1))
            precision = check_precision_files(bundle, images, limit)
            backends, not_run = check_backends(bundle, images, limit)
    except SkDeployError as exc:
        raise fail(str(exc)) from None
    if settings.as_json:
        render.as_json({"parity": report, "precision": precision, "backends": backends, "not_run": not_run})
    else:
        _verify_tables(report, precision, backends, not_run)
    failed = [r.file for r in [*precision, *backends] if not r.passed]
    if not report.passed or failed:
        raise fail("verification failed" + (f" (accuracy gate: {', '.join(failed)})" if failed else ""))


def _verify_tables(report: Any, precision: list[Any], backends: list[Any], not_run: list[str]) -> None:
    render.verify_table(report)
    if precision:
        render.accuracy_table(precision, f"precision graphs against model.onnx: {report.count} images, {report.images}")
    if backends:
        render.accuracy_table(backends, f"other backends against model.onnx (ONNX Runtime CPU): {report.count} images")
    for line in not_run:
        err_console.print(f"[yellow]not run:[/] {line}", highlight=False)


@command(InspectSettings)
def inspect_command(settings: InspectSettings) -> None:
    """Show inputs, outputs, op histogram, node counts and sizes of a bundle's ONNX files or of one file."""
    from sk_deploy.graph.describe import describe
    from sk_deploy.jsonout import dumps

    try:
        summary = describe(settings.target)
    except SkDeployError as exc:
        raise fail(str(exc)) from None
    if settings.as_json:
        console.print_json(dumps(summary))
        return
    render.inspect_tables(summary)
