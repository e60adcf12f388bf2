"""``sk-deploy export``, ``sk-deploy verify`` and ``sk-deploy inspect``: the bundle's graphs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from sk_deploy.cli import render
from sk_deploy.cli.common import UserError, app, console, err_console, fail, note, one_number_profile, renamed, waiting


@app.command("export")
def export_command(
    model: Annotated[str, typer.Argument(help="Registered model name (see `sk-deploy models`).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Bundle directory to write.")],
    weights: Annotated[Path | None, typer.Option(help="Checkpoint: .safetensors, or .pth/.pt/.bin.")] = None,
    pretrained: Annotated[bool, typer.Option(help="Load the timm checkpoint from the Hugging Face hub.")] = False,
    opset: Annotated[int, typer.Option(help="ONNX opset (17 or newer).")] = 18,
    batch_profile: Annotated[str, typer.Option(help="Batch sizes to serve, MIN:OPT:MAX (recorded for engines).")]
    = "1:8:32",
    input_size: Annotated[
        tuple[int, int] | None, typer.Option(help="Input height and width (square), default the model's.")
    ] = None,
    fuse_preprocess: Annotated[
        bool, typer.Option(help="model.onnx takes uint8 NHWC pictures and normalises them itself.")
    ] = False,
    exporter: Annotated[str, typer.Option(help="torch exporter: dynamo (default) or legacy (TorchScript).")]
    = "dynamo",
    force: Annotated[bool, typer.Option(help="Replace a non-empty output directory.")] = False,
    verify: Annotated[bool, typer.Option(help="Check the ONNX files against PyTorch after export.")] = True,
    images: Annotated[Path | None, typer.Option(help="Folder of photos to verify on (default: generated "
                                                "pictures) and, with --recompute-bn, to take BatchNorm statistics "
                                                "from.")] = None,
    recompute_bn: Annotated[
        bool,
        typer.Option(help="Recompute BatchNorm statistics on --images before export; with random weights also "
                     "scale residual branches: realistic activations for FP16/INT8 figures."),
    ] = False,
    recompute_bn_count: Annotated[int, typer.Option(min=1, help="Photos of --images used by --recompute-bn.")] = 64,
    batch: Annotated[str | None, typer.Option(hidden=True, help="Deprecated: --batch-profile.")] = None,
    calibrate_bn: Annotated[Path | None, typer.Option(hidden=True, help="Deprecated: --images DIR "
                                                      "--recompute-bn.")] = None,
    calibrate_bn_count: Annotated[int | None, typer.Option(hidden=True, help="Deprecated: --recompute-bn-count.")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Export a model to a bundle: model.raw.onnx (exporter output), model.onnx (cleaned), manifest.json."""
    from sk_deploy.graph.export import EXPORTERS
    from sk_deploy.graph.pipeline import BatchProfile, ExportRequest, export_bundle

    if exporter not in EXPORTERS:
        raise fail(f"unknown exporter {exporter!r}; use one of: {', '.join(EXPORTERS)}")
    batch_profile = renamed(batch_profile, batch, "--batch", "--batch-profile")
    one_number_profile(batch_profile)
    bn_count = renamed(recompute_bn_count, calibrate_bn_count, "--calibrate-bn-count", "--recompute-bn-count")
    if recompute_bn and images is None:
        raise fail("--recompute-bn takes its photos from --images: add --images DIR")
    bn_folder = renamed(images if recompute_bn else None, calibrate_bn, "--calibrate-bn DIR",
                        "--images DIR --recompute-bn")
    try:
        request = ExportRequest(
            model=model, out=out, weights=weights, pretrained=pretrained, opset=opset, exporter=exporter,  # type: ignore[arg-type]
            batch=BatchProfile.parse(batch_profile), input_size=input_size, fuse_preprocess=fuse_preprocess,
            force=force, verify=verify, images=images, calibrate_bn=bn_folder, calibrate_bn_count=bn_count,
        )
        with waiting(f"exporting {model}...") as status:
            bundle, report = export_bundle(request, progress=lambda message: status.update(f"{model}: {message}..."))
    except UserError as exc:
        raise fail(str(exc)) from None
    if weights is None and not pretrained:
        note(f"{model} has random weights (no --weights or --pretrained)")
    if as_json:
        render.as_json({"bundle": str(bundle.path), "files": bundle.file_entries(), "verify": report})
    else:
        render.bundle_table(bundle)
        if report is not None:
            render.verify_table(report)
    if report is not None and not report.passed:
        raise fail(f"verification failed; the bundle is at {bundle.path} (see manifest.json, stages.verify)")


@app.command("verify")
def verify_command(
    bundle_dir: Annotated[Path, typer.Argument(metavar="BUNDLE", help="Bundle directory.")],
    images: Annotated[Path | None, typer.Option(help="Folder of pictures (default: generated ones).")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Pictures to use from --images.")] = 16,
    weights: Annotated[Path | None, typer.Option(help="Reference checkpoint, instead of the manifest's.")] = None,
    max_abs: Annotated[float, typer.Option(help="Largest allowed absolute error of a logit.")] = 1e-4,
    min_cosine: Annotated[float, typer.Option(help="Smallest allowed cosine similarity of a logit vector.")]
    = 0.9999,
    min_top1: Annotated[float, typer.Option(help="Smallest allowed top-1 agreement (0 to 1).")] = 1.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Compare every ONNX file of a bundle with PyTorch on pictures; exit 1 if any misses a threshold."""
    from sk_deploy.bundle import Bundle
    from sk_deploy.graph.foreign import is_imported
    from sk_deploy.graph.verify import Thresholds, verify_bundle
    from sk_deploy.models.reference import build_reference, describe_weights
    from sk_deploy.precision.accuracy import check_precision_files
    from sk_deploy.precision.backends import check_backends

    try:
        bundle = Bundle.open(bundle_dir)
        source = describe_weights(weights) if weights is not None else bundle.weights
        with waiting(f"verifying {bundle_dir}..."):
            # an imported bundle's reference is its input graph (model.raw.onnx), not a PyTorch network
            model = None if is_imported(bundle) and weights is None else build_reference(
                bundle.model_name, source, bundle.path)
            report = verify_bundle(bundle, model, images=images, limit=limit,
                                   thresholds=Thresholds(max_abs, min_cosine, min_top1))
            precision = check_precision_files(bundle, images, limit)
            backends, not_run = check_backends(bundle, images, limit)
    except UserError as exc:
        raise fail(str(exc)) from None
    if as_json:
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


@app.command("inspect")
def inspect_command(
    target: Annotated[Path, typer.Argument(metavar="BUNDLE|FILE.onnx", help="A bundle directory or an ONNX file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Show inputs, outputs, op histogram, node counts and sizes of a bundle's ONNX files or of one file."""
    from sk_deploy.graph.describe import describe
    from sk_deploy.jsonout import dumps

    try:
        summary = describe(target)
    except UserError as exc:
        raise fail(str(exc)) from None
    if as_json:
        console.print_json(dumps(summary))
        return
    render.inspect_tables(summary)
