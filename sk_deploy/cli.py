"""The ``sk-deploy`` command line: each command is a thin call into one module of the package."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    import numpy as np

    from sk_deploy.graph.verify import VerifyReport
    from sk_deploy.precision.accuracy import AccuracyReport

app = typer.Typer(
    name="sk-deploy",
    help="Deploy attention CNNs (SKNet, SENet): PyTorch -> clean ONNX -> TensorRT / ONNX Runtime -> HTTP.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one error line for a person and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@app.command("models")
def models_command(
    gmacs: Annotated[bool, typer.Option(help="Count GMACs (builds each network once, a few seconds).")] = True,
) -> None:
    """List the registered networks: parameters, GMACs at the default size, input size, pretrained source."""
    from sk_deploy.models import create_model, get_spec, list_models
    from sk_deploy.models.profile import count_macs, count_params

    table = Table(title="Registered models")
    for column, justify in (("name", "left"), ("params", "right"), ("GMACs", "right"),
                            ("input", "left"), ("pretrained (Hugging Face hub)", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for name in list_models():
        spec = get_spec(name)
        model = create_model(name)
        macs = f"{count_macs(model, spec.input_size) / 1e9:.2f}" if gmacs else "-"
        table.add_row(
            name, f"{count_params(model) / 1e6:.2f}M", macs,
            "x".join(map(str, spec.input_size)), spec.hub_id or "-",
        )
    console.print(table)


@app.command("predict")
def predict_command(
    images: Annotated[list[Path], typer.Argument(help="Image files (JPEG, PNG, WebP, ...).")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Registered model name (default sknet50); "
                                               "runs it in PyTorch.")] = None,
    bundle: Annotated[Path | None, typer.Option(help="Bundle directory: run its graph or engine instead.")] = None,
    backend: Annotated[str, typer.Option(help="With --bundle: auto, tensorrt, ort-tensorrt, ort-cuda, ort-cpu, "
                                         "openvino or torch.")] = "auto",
    precision: Annotated[str, typer.Option(help="With --bundle: fp32, fp16, int8 or bf16 (openvino, on a CPU "
                                           "with native bfloat16).")] = "fp32",
    weights: Annotated[Path | None, typer.Option(help="Checkpoint: .safetensors, or .pth/.pt/.bin.")] = None,
    pretrained: Annotated[bool, typer.Option(help="Load the timm checkpoint from the Hugging Face hub.")] = False,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Classes to show per image.")] = 5,
    device: Annotated[str, typer.Option(help="PyTorch device: auto, cpu, cuda or cuda:N.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Classify images and print the top-k labels and probabilities: a model in PyTorch, or a bundle's graph or
    TensorRT engine on the backend --backend names (auto: the fastest this machine can run)."""
    from sk_deploy.labels import imagenet_labels
    from sk_deploy.runtime.classify import top_k as rank

    if bundle is not None:
        if model is not None or weights is not None or pretrained:
            raise fail("--bundle runs the bundle's own model: leave out --model, --weights and --pretrained")
        logits, info, random_weights = _predict_bundle(images, bundle, backend, precision, device)
    else:
        if backend != "auto" or precision != "fp32":
            raise fail("--backend and --precision apply to a bundle: add --bundle DIR (see sk-deploy export)")
        model = model or "sknet50"
        logits, info = _predict_model(images, model, weights, pretrained, device)
        random_weights = weights is None and not pretrained
    if random_weights:
        err_console.print(f"[yellow]note:[/] {info['model']} has random weights: labels are meaningless")
    results = rank(logits, top_k, imagenet_labels())
    if as_json:
        import json
        from dataclasses import asdict

        payload = [{"image": str(path), **info, "predictions": [asdict(p) for p in ranked]}
                   for path, ranked in zip(images, results, strict=True)]
        print(json.dumps(payload, indent=2))
        return
    for path, ranked in zip(images, results, strict=True):
        ran = ", ".join(str(v) for k, v in info.items() if k not in ("bundle", "file"))
        console.print(f"[bold]{path}[/] ({ran})", highlight=False, soft_wrap=True)
        table = Table()
        table.add_column("#", justify="right")
        table.add_column("class", justify="right")
        table.add_column("label")
        table.add_column("probability", justify="right")
        for i, p in enumerate(ranked, 1):
            table.add_row(str(i), str(p.index), p.label, f"{p.probability:.4f}")
        console.print(table)


def _predict_model(
    images: list[Path], model: str, weights: Path | None, pretrained: bool, device: str
) -> tuple[np.ndarray, dict[str, str]]:
    """Logits of ``images`` from a registered model in PyTorch, and what ran (model, backend, device)."""
    import torch

    from sk_deploy.images import load_batch
    from sk_deploy.models import get_spec
    from sk_deploy.models.weights import build_model
    from sk_deploy.runtime.device import resolve_device

    try:
        spec = get_spec(model)
        target = resolve_device(device)
        batch = load_batch(list(images), spec.preprocess)
        with err_console.status(f"loading {model}..."):
            net = build_model(model, weights=weights, pretrained=pretrained).to(target)
    except _user_errors() as exc:
        raise fail(str(exc)) from None
    with torch.inference_mode():
        logits = net(torch.from_numpy(batch).to(target)).float().cpu().numpy()
    return logits, {"model": model, "backend": "torch", "device": str(target)}


def _predict_bundle(
    images: list[Path], bundle_dir: Path, backend: str, precision: str, device: str
) -> tuple[np.ndarray, dict[str, str], bool]:
    """Logits of ``images`` from a bundle through the Predictor, what ran (model, backend, precision, file),
    and whether the weights are random."""
    from sk_deploy.graph.reference import is_trained
    from sk_deploy.graph.verify import preprocess_from_manifest
    from sk_deploy.images import load_batch
    from sk_deploy.runtime.predictor import Predictor
    from sk_deploy.runtime.torch_backend import TorchOptions

    try:
        with err_console.status(f"loading {bundle_dir} ({backend})..."):
            predictor = Predictor(bundle_dir, backend, precision, torch=TorchOptions(device=device,
                                                                                   fp16=precision == "fp16"))
        manifest = predictor.bundle.manifest
        batch = load_batch(list(images), preprocess_from_manifest(manifest["preprocess"]),
                           uint8_nhwc=predictor.input_spec.dtype == "uint8")
        with predictor:
            logits = predictor.predict(batch)
    except _user_errors() as exc:
        raise fail(str(exc)) from None
    if backend == "auto":
        err_console.print(f"[dim]backend {predictor.backend}: {predictor.reason}[/]", highlight=False,
                          soft_wrap=True)
    _print_tip(manifest, predictor.backend, precision, predictor.machine)
    info = {"model": manifest["model"]["name"], "backend": predictor.backend, "precision": predictor.precision,
            "bundle": str(bundle_dir), "file": predictor.file or "(PyTorch network)"}
    return logits, info, not is_trained(manifest["model"]["weights"])


def _print_tip(manifest: dict, backend: str, precision: str, machine: object) -> None:
    """One line naming a faster precision that passed its gate in the bundle and runs here, if there is one."""
    from sk_deploy.runtime.cpu_choice import faster_tip

    tip = faster_tip(manifest, backend, precision, machine)  # type: ignore[arg-type]
    if tip:
        err_console.print(f"[cyan]{tip}[/]", highlight=False, soft_wrap=True)


def _user_errors() -> tuple[type[Exception], ...]:
    """The exceptions whose message is meant for a person: printed as one line, exit code 1."""
    from sk_deploy.bundle import BundleError
    from sk_deploy.deploy.container import PrepareError
    from sk_deploy.deploy.triton import TritonRepoError
    from sk_deploy.engines.compat import EngineMismatch
    from sk_deploy.engines.tensorrt import BuildError
    from sk_deploy.graph.export import ExportError
    from sk_deploy.graph.passes.preprocess import PreprocessError
    from sk_deploy.graph.verify import VerifyError
    from sk_deploy.images import ImageError
    from sk_deploy.models import UnknownModelError
    from sk_deploy.models.weights import WeightsError
    from sk_deploy.precision.calibration import CalibrationError
    from sk_deploy.precision.fp16 import PrecisionError
    from sk_deploy.runtime.availability import BackendUnavailable
    from sk_deploy.runtime.device import DeviceError
    from sk_deploy.runtime.predictor import PredictorInputError

    return (UnknownModelError, WeightsError, ExportError, BundleError, VerifyError, PreprocessError, ImageError,
            CalibrationError, PrecisionError, BackendUnavailable, DeviceError, PredictorInputError, BuildError,
            EngineMismatch, TritonRepoError, PrepareError)


def _size(num_bytes: int) -> str:
    return f"{num_bytes / 1e6:.1f} MB" if num_bytes >= 1e5 else f"{num_bytes / 1e3:.1f} kB"


def _shape(shape: list[object] | None) -> str:
    return "?" if shape is None else "x".join(str(d) for d in shape)


def _print_verify(report: VerifyReport) -> None:
    """The parity table of a verification and the thresholds it was held to."""
    table = Table(title=f"parity against PyTorch: {report.count} images, {report.images}", title_justify="left")
    table.add_column("file", no_wrap=True)
    for column in ("max abs", "mean abs", "min cosine", "top-1", "top-5"):
        table.add_column(column, justify="right")
    table.add_column("result")
    for item in report.files:
        result = "[green]pass[/]" if item.passed else "[red]FAIL[/]: " + "; ".join(item.failures)
        table.add_row(
            item.file, f"{item.max_abs:.2e}", f"{item.mean_abs:.2e}", f"{item.min_cosine:.7f}",
            f"{item.top1_agreement:.0%}", f"{item.top5_overlap:.0%}", result,
        )
    console.print(table)
    thresholds = report.thresholds
    console.print(
        f"thresholds: max abs <= {thresholds.max_abs:g}, cosine >= {thresholds.min_cosine}, "
        f"top-1 >= {thresholds.min_top1:.0%}", highlight=False,
    )


def _print_accuracy(reports: list[AccuracyReport], title: str) -> None:
    """The accuracy table of precision graphs against float32, with each gate's verdict."""
    table = Table(title=title, title_justify="left")
    table.add_column("file", no_wrap=True)
    for column in ("cosine mean / min", "SQNR dB", "top-1 agree", "top-5 overlap", "max abs"):
        table.add_column(column, justify="right")
    table.add_column("gate")
    for r in reports:
        g = r.agreement
        verdict = "[green]pass[/]" if r.passed else "[red]FAIL[/]: " + "; ".join(r.failures)
        table.add_row(r.file, f"{g.cosine_mean:.5f} / {g.cosine_min:.5f}", f"{g.sqnr_db:.1f}",
                      f"{g.top1_agreement:.1%}", f"{g.top5_overlap:.1%}", f"{g.max_abs:.4f}", verdict)
    console.print(table)


@app.command("export")
def export_command(
    model: Annotated[str, typer.Argument(help="Registered model name (see `sk-deploy models`).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Bundle directory to write.")],
    weights: Annotated[Path | None, typer.Option(help="Checkpoint: .safetensors, or .pth/.pt/.bin.")] = None,
    pretrained: Annotated[bool, typer.Option(help="Load the timm checkpoint from the Hugging Face hub.")] = False,
    opset: Annotated[int, typer.Option(help="ONNX opset (17 or newer).")] = 18,
    batch: Annotated[str, typer.Option(help="Batch sizes to serve, MIN:OPT:MAX (recorded for engines).")] = "1:8:32",
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
    images: Annotated[Path | None, typer.Option(help="Folder of pictures to verify on (default: generated).")]
    = None,
    calibrate_bn: Annotated[
        Path | None,
        typer.Option(help="Folder of photos to recompute BatchNorm statistics on before export; with random "
                     "weights also scales residual branches: realistic activations for FP16/INT8 figures."),
    ] = None,
    calibrate_bn_count: Annotated[int, typer.Option(min=1, help="Photos used by --calibrate-bn.")] = 64,
) -> None:
    """Export a model to a bundle: model.raw.onnx (exporter output), model.onnx (cleaned), manifest.json."""
    from sk_deploy.graph.export import EXPORTERS
    from sk_deploy.graph.pipeline import BatchProfile, ExportRequest, export_bundle

    if exporter not in EXPORTERS:
        raise fail(f"unknown exporter {exporter!r}; use one of: {', '.join(EXPORTERS)}")
    try:
        request = ExportRequest(
            model=model, out=out, weights=weights, pretrained=pretrained, opset=opset, exporter=exporter,  # type: ignore[arg-type]
            batch=BatchProfile.parse(batch), input_size=input_size, fuse_preprocess=fuse_preprocess, force=force,
            verify=verify, images=images, calibrate_bn=calibrate_bn, calibrate_bn_count=calibrate_bn_count,
        )
        with err_console.status(f"exporting {model}...") as status:
            bundle, report = export_bundle(request, progress=lambda message: status.update(f"{model}: {message}..."))
    except _user_errors() as exc:
        raise fail(str(exc)) from None
    if weights is None and not pretrained:
        err_console.print(f"[yellow]note:[/] {model} has random weights (no --weights or --pretrained)")
    table = Table(title=f"bundle {bundle.path}", title_justify="left")
    table.add_column("file", no_wrap=True)
    for column in ("role", "input", "nodes", "size"):
        table.add_column(column, justify="right" if column in ("nodes", "size") else "left")
    for name, entry in bundle.manifest["files"].items():
        described = entry.get("input")
        table.add_row(
            name, entry.get("role", ""),
            f"{described.get('dtype', '?')} {_shape(described.get('shape'))}" if described else "-",
            str(entry.get("nodes", "")), _size(entry["bytes"]),
        )
    console.print(table)
    select = bundle.manifest["stages"]["optimize"]["sk_select"]
    console.print(
        f"SK select blocks rewritten: {select['rewritten']}, skipped: {len(select['skipped'])}", highlight=False
    )
    for skipped in select["skipped"]:
        console.print(f"  skipped {skipped['block']}: {skipped['reason']}", highlight=False)
    if report is not None:
        _print_verify(report)
        if not report.passed:
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
) -> None:
    """Compare every ONNX file of a bundle with PyTorch on pictures; exit 1 if any misses a threshold."""
    from sk_deploy.bundle import Bundle
    from sk_deploy.graph.reference import build_reference, describe_weights
    from sk_deploy.graph.verify import Thresholds, verify_bundle
    from sk_deploy.precision.accuracy import check_precision_files

    try:
        bundle = Bundle.open(bundle_dir)
        source = describe_weights(weights) if weights is not None else bundle.manifest["model"]["weights"]
        with err_console.status(f"verifying {bundle_dir}..."):
            model = build_reference(bundle.model_name, source, bundle.path)
            report = verify_bundle(bundle, model, images=images, limit=limit,
                                   thresholds=Thresholds(max_abs, min_cosine, min_top1))
            precision = check_precision_files(bundle, images, limit)
    except _user_errors() as exc:
        raise fail(str(exc)) from None
    _print_verify(report)
    if precision:
        _print_accuracy(precision, f"precision graphs against model.onnx: {report.count} images, {report.images}")
    failed = [r.file for r in precision if not r.passed]
    if not report.passed or failed:
        raise fail("verification failed" + (f" (accuracy gate: {', '.join(failed)})" if failed else ""))


@app.command("inspect")
def inspect_command(
    target: Annotated[Path, typer.Argument(metavar="BUNDLE|FILE.onnx", help="A bundle directory or an ONNX file.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Show inputs, outputs, op histogram, node counts and sizes of a bundle's ONNX files or of one file."""
    import json

    from sk_deploy.graph.describe import describe

    try:
        summary = describe(target)
    except _user_errors() as exc:
        raise fail(str(exc)) from None
    if as_json:
        console.print_json(json.dumps(summary))
        return
    files = summary["files"]
    if "bundle" in summary:
        weights = summary["model"].get("weights", {})
        console.print(f"bundle {summary['bundle']}: {summary['model'].get('name')} "
                      f"(weights: {weights.get('source', '?')})", highlight=False)
    overview = Table(title="files", title_justify="left")
    overview.add_column("file", no_wrap=True)
    for column in ("size", "opset", "nodes", "rank-5 tensors"):
        overview.add_column(column, justify="right")
    for name, info in files.items():
        overview.add_row(name, _size(info["bytes"]), str(info["opset"]), str(info["nodes"]), str(info["rank5_tensors"]))
    console.print(overview)
    io = Table(title="inputs and outputs", title_justify="left")
    for column in ("file", "", "name", "dtype", "shape"):
        io.add_column(column, no_wrap=True)
    for name, info in files.items():
        for kind in ("inputs", "outputs"):
            for value in info[kind]:
                io.add_row(name, kind[:-1], value["name"], value["dtype"], _shape(value["shape"]))
    console.print(io)
    ops = Table(title="op histogram", title_justify="left")
    ops.add_column("op")
    for name in files:
        ops.add_column(name, justify="right")
    all_ops = sorted({op for info in files.values() for op in info["ops"]},
                     key=lambda op: -max(info["ops"].get(op, 0) for info in files.values()))
    for op in all_ops:
        ops.add_row(op, *(str(info["ops"].get(op, 0)) for info in files.values()))
    ops.add_row("[bold]total[/]", *(f"[bold]{info['nodes']}[/]" for info in files.values()))
    console.print(ops)
    verify = summary.get("stages", {}).get("verify")
    if verify:
        state = "[green]passed[/]" if verify["passed"] else "[red]failed[/]"
        console.print(f"verification {state} on {verify['count']} images ({verify['images']})")


@app.command("quantize")
def quantize_command(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory (from `sk-deploy export`).")],
    precision: Annotated[str, typer.Option(help="fp16, int8, or bf16 (no file: the float32 graph in bf16 on "
                                           "OpenVINO, measured and gated; needs a CPU with native bfloat16).")]
    = "int8",
    target: Annotated[str, typer.Option(help="int8 form: tensorrt (QDQ, symmetric int8) or cpu (U8S8).")]
    = "tensorrt",
    calib: Annotated[Path | None, typer.Option(help="Folder of calibration photos (JPEG/PNG); int8 needs it.")]
    = None,
    calib_size: Annotated[int, typer.Option(help="Photos to calibrate on (a fixed-seed subset).")] = 256,
    holdout_size: Annotated[int, typer.Option(help="Other photos of the folder to measure accuracy on.")] = 64,
    method: Annotated[str, typer.Option(help="Calibration: minmax, entropy or percentile.")] = "minmax",
    exclude: Annotated[list[str] | None, typer.Option(help="Op type or node name to keep float32 (repeat).")]
    = None,
    gate: Annotated[bool, typer.Option(help="Refuse a graph that misses its accuracy gate.")] = True,
) -> None:
    """Add an FP16 or INT8 graph to a bundle, calibrated on real photos and gated on its accuracy vs float32; or
    measure bf16 against float32 (no file) and record its figures in the manifest."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sk_deploy.precision.pipeline import QuantizeRequest, quantize_bundle

    request = QuantizeRequest(bundle=bundle, precision=precision, target=target, calib=calib, calib_size=calib_size,
                              holdout_size=holdout_size, method=method, exclude=tuple(exclude or ()), gate=gate)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = None

        def step(message: str, total: int) -> None:
            nonlocal task
            if task is not None:
                bar.update(task, visible=False)
            task = bar.add_task(message, total=total or None)

        try:
            result = quantize_bundle(request, step, lambda n: bar.advance(task, n) if task is not None else None)
        except _user_errors() as exc:
            raise fail(str(exc)) from None
    a = result.accuracy
    _print_accuracy([a], f"{result.file} vs model.onnx on {a.agreement.images} held-out pictures")
    for note in a.notes:
        err_console.print(f"[yellow]note:[/] {note}")
    if not a.passed:
        kept = "kept anyway (--no-gate)" if result.written else "not added to the bundle"
        raise fail(f"{result.file} misses its accuracy gate ({'; '.join(a.failures)}); {kept}")
    if precision == "bf16":
        console.print(f"[green]recorded[/] the bf16 figures in {bundle / 'manifest.json'} (stages.precision.bf16); "
                      "no file is needed: serve or predict with --precision bf16", highlight=False, soft_wrap=True)
        return
    console.print(f"[green]wrote[/] {bundle / result.file}")


@app.command("build")
def build_command(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory (from `sk-deploy export`, `sk-deploy quantize`).")],
    precision: Annotated[str, typer.Option(help="fp32 (model.onnx), fp16 (model.fp16.onnx) or int8 "
                                           "(model.int8.onnx, the TensorRT Q/DQ form).")] = "fp16",
    batch: Annotated[str | None, typer.Option(help="Optimisation profile MIN:OPT:MAX (default: the bundle's).")]
    = None,
    workspace: Annotated[float, typer.Option(help="Builder workspace limit in GiB.")] = 4.0,
    timing_cache: Annotated[Path | None, typer.Option(help="Timing cache to load and save (default: one per GPU "
                                                      "and TensorRT version under ~/.cache/sk-deploy).")] = None,
    hardware_compat: Annotated[str, typer.Option(help="none (this GPU model), same-cc (any GPU of this compute "
                                                 "capability) or ampere+ (any Ampere or newer GPU).")] = "none",
) -> None:
    """Build a TensorRT engine from the bundle's graph of that precision: model.<precision>.<gpu>.trt<ver>.plan,
    recorded in the manifest with its TensorRT version, GPU, profile and sizes. Needs a GPU and TensorRT."""
    from sk_deploy.engines.tensorrt import BuildRequest, build_engine, check_request
    from sk_deploy.graph.pipeline import BatchProfile

    try:
        profile = BatchProfile.parse(batch) if batch else None
        request = BuildRequest(bundle=bundle, precision=precision, workspace_gib=workspace, timing_cache=timing_cache,
                               batch=(profile.min, profile.opt, profile.max) if profile else None,
                               hardware_compat=hardware_compat)
        check_request(request)
        with err_console.status(f"building {precision} engine...") as status:
            name, entry = build_engine(request, progress=lambda message: status.update(f"TensorRT: {message}..."))
    except _user_errors() as exc:
        raise fail(str(exc)) from None
    gpu, trt = entry["gpu"], entry["tensorrt"]
    console.print(f"[green]wrote[/] {bundle / name}: {_size(entry['bytes'])}, TensorRT {trt['version']}, "
                  f"{gpu['name']} (sm {'.'.join(map(str, gpu['compute_capability']))}), batch "
                  f"{entry['profile']['min']}:{entry['profile']['opt']}:{entry['profile']['max']}, built in "
                  f"{entry['build_seconds']} s, device memory {_size(entry['device_memory'])}", highlight=False)


@app.command("serve")
def serve_command(
    target: Annotated[str, typer.Argument(metavar="BUNDLE|MODEL", help="A bundle directory, or a registered model "
                                          "name to export first (into ~/.cache/sk-deploy/bundles, reused).")],
    backend: Annotated[str, typer.Option(help="auto, tensorrt, ort-tensorrt, ort-cuda, ort-cpu, openvino or "
                                         "torch.")] = "auto",
    precision: Annotated[str, typer.Option(help="fp32, fp16, int8 (the bundle must hold that graph) or bf16 "
                                           "(openvino, on a CPU with native bfloat16).")] = "fp32",
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one, printed).")] = 8000,
    max_batch: Annotated[int, typer.Option(min=1, help="Largest batch the batcher forms.")] = 32,
    max_delay_ms: Annotated[float, typer.Option(min=0, help="Longest wait for a batch to fill, from its first "
                                                "picture's arrival.")] = 2.0,
    max_queue: Annotated[int, typer.Option(min=1, help="Pictures allowed to wait; beyond, 429 with Retry-After.")]
    = 256,
    timeout_ms: Annotated[float, typer.Option(min=1, help="A request's deadline; past it, 504 and dropped from the "
                                              "queue.")] = 5000.0,
    max_body_mb: Annotated[float, typer.Option(min=0.001, help="Largest request body; beyond, 413.")] = 16.0,
    max_pixels: Annotated[int, typer.Option(min=1, help="Largest picture, in pixels, decoded (decompression "
                                            "bombs are refused before decoding).")] = 40_000_000,
    decode_threads: Annotated[int, typer.Option(min=0, help="Threads decoding pictures (0: one per CPU, at most "
                                                "4).")] = 0,
    drain_seconds: Annotated[float, typer.Option(min=0, help="On SIGTERM/Ctrl-C, answer 503 to new requests this "
                                                 "long before stopping; in-flight ones finish.")] = 1.0,
    weights: Annotated[Path | None, typer.Option(help="With a model name: checkpoint to export.")] = None,
    pretrained: Annotated[bool, typer.Option(help="With a model name: the timm checkpoint from the hub.")] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn log level: critical, error, warning, info, debug.")]
    = "info",
    access_log: Annotated[bool, typer.Option(help="Log every request (one line each).")] = True,
) -> None:
    """Serve a bundle over HTTP: /v1/classify, KServe v2 (/v2/...), /healthz, /readyz, /metrics; dynamic
    batching on one inference thread. The model loads and warms up after the server starts (/readyz turns 200)."""
    from sk_deploy.runtime.availability import probe_machine
    from sk_deploy.runtime.predictor import plan
    from sk_deploy.service.app import ServiceConfig
    from sk_deploy.service.server import serve
    from sk_deploy.service.target import resolve_target

    try:
        with err_console.status(f"preparing {target}...") as status:
            bundle, exported = resolve_target(target, weights, pretrained,
                                              progress=lambda message: status.update(f"{message}..."))
            machine = probe_machine()
            choice = plan(bundle.manifest, backend, precision, machine)  # a backend it lacks: one line now
    except _user_errors() as exc:
        raise fail(str(exc)) from None
    bundle_dir = bundle.path
    if exported:
        err_console.print(f"exported {target} to {bundle_dir}", highlight=False)
    err_console.print(f"serving {bundle.model_name} from {bundle_dir} on {choice.backend} {precision}: "
                      f"{choice.reason}", highlight=False, soft_wrap=True)
    _print_tip(bundle.manifest, choice.backend, precision, machine)
    config = ServiceConfig(bundle=bundle_dir, backend=backend, precision=precision, max_batch=max_batch,
                           max_delay_ms=max_delay_ms, max_queue=max_queue, timeout_ms=timeout_ms,
                           max_body_mb=max_body_mb, max_pixels=max_pixels, decode_threads=decode_threads)
    error = serve(config, host=host, port=port, drain_seconds=drain_seconds, log_level=log_level,
                  access_log=access_log)
    if error:
        raise fail(f"cannot serve {bundle_dir}: {error}")


def _split(text: str, what: str, cast: type = str) -> tuple:
    """A comma-separated option as a tuple of ``cast`` values; one error line for a bad item."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    try:
        return tuple(cast(item) for item in items)
    except ValueError:
        raise fail(f"{what}: expected comma-separated {cast.__name__} values, got {text!r}") from None


@app.command("bench")
def bench_command(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory (from `sk-deploy export`).")],
    backends: Annotated[str, typer.Option(help="Comma-separated: torch, ort-cpu, openvino, ort-cuda, ort-tensorrt, "
                                          "tensorrt (the default: all of these), and the opt-in torch-compile, "
                                          "ort-cpu-raw and openvino-raw (the exporter's graph before cleanup), "
                                          "ort-cuda-graph, tensorrt-graph. PyTorch eager fp32 is always measured "
                                          "first as the baseline.")]
    = "torch,ort-cpu,openvino,ort-cuda,ort-tensorrt,tensorrt",
    precisions: Annotated[str, typer.Option(help="Comma-separated: fp32, fp16, int8, bf16 (rows the bundle or "
                                            "machine cannot run are skipped with the reason).")]
    = "fp32,fp16,int8,bf16",
    batch: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,8,32",
    warmup: Annotated[float, typer.Option(min=0, help="Seconds of warm-up runs per row (after a first run).")]
    = 1.0,
    duration: Annotated[float, typer.Option(min=0, help="Seconds of timed runs per row.")] = 3.0,
    min_runs: Annotated[int, typer.Option(min=1, help="Timed runs per row at least, however long they take.")] = 5,
    max_runs: Annotated[int, typer.Option(min=1, help="Timed runs per row at most.")] = 100_000,
    threads: Annotated[int, typer.Option(min=0, help="ONNX Runtime intra-op threads (0: its default).")] = 0,
    out: Annotated[Path | None, typer.Option(help="Directory for bench.json, bench.csv, bench.md and the PNG plots "
                                             "(default: bench-results/<bundle name>).")] = None,
    plots: Annotated[bool, typer.Option(help="Draw the PNG plots (needs matplotlib).")] = True,
) -> None:
    """Measure latency (min/p50/p90/p95/p99/max/mean), throughput and peak memory of a bundle for every
    backend x precision x batch this machine can run, each against PyTorch eager fp32 in the same run; a table
    here and JSON, CSV, Markdown and PNG plots in --out. Ctrl-C writes the rows done so far and exits 130."""
    import signal

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sk_deploy.bench.latency import BenchConfig, BenchError, BenchRun, Row
    from sk_deploy.bench.machine import describe_short, machine_libraries
    from sk_deploy.bench.report import build_report, rich_table, write_report
    from sk_deploy.bundle import Bundle

    config = BenchConfig(backends=_split(backends, "--backends"), precisions=_split(precisions, "--precisions"),
                         batches=_split(batch, "--batch", int), warmup_s=warmup, duration_s=duration,
                         min_runs=min_runs, max_runs=max_runs, threads=threads)
    try:
        run = BenchRun(Bundle.open(bundle), config)
    except (BenchError, *_user_errors()) as exc:
        raise fail(str(exc)) from None
    out = out or Path("bench-results") / bundle.resolve().name
    command = (f"sk-deploy bench {bundle} --backends {','.join(config.backends)} --precisions "
               f"{','.join(config.precisions)} --batch {','.join(map(str, config.batches))} --warmup {warmup:g} "
               f"--duration {duration:g}" + (f" --min-runs {min_runs}" if min_runs != 5 else ""))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    interrupted = False
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("starting", total=run.planned)

        def on_row(row: Row, cells: int) -> None:
            bar.advance(task, cells)
            if row.status == "ok" and row.latency is not None:
                ratio = f", {row.vs_baseline['speedup_p50']:.2f}x eager" if row.vs_baseline else ""
                bar.console.print(f"[green]done[/] {row.label}: p50 {row.latency.p50:.3f} ms, "
                                  f"{row.images_per_s:.1f} images/s{ratio}", highlight=False)
            else:
                bar.console.print(f"[yellow]skipped[/] {row.label} (the reason is in the summary)", highlight=False)

        try:
            run.execute(on_start=lambda text: bar.update(task, description=text), on_row=on_row)
        except KeyboardInterrupt:
            interrupted = True
    if interrupted:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the partial report short
    report = build_report(run, command, interrupted)
    written, no_plots = write_report(report, out, with_plots=plots)
    console.print(rich_table(report))
    console.print(f"machine: {describe_short(report['machine'])}; {machine_libraries(report['machine'])}",
                  highlight=False, soft_wrap=True)
    for row in report["rows"]:
        if row["status"] != "ok":
            where = f" batch {row['batch']}" if row["batch"] is not None else ""
            console.print(f"[yellow]skipped[/] {row['backend']} {row['precision']}{where}: {row['reason']}",
                          highlight=False, soft_wrap=True)
    if no_plots:
        err_console.print(f"[yellow]note:[/] {no_plots}", highlight=False)
    console.print(f"[green]wrote[/] {', '.join(str(p) for p in written)}", highlight=False, soft_wrap=True)
    if interrupted:
        done = sum(1 for r in report["rows"] if r["status"] == "ok")
        raise fail(f"interrupted: partial report of the {done} measured row(s) so far written to {out}", code=130)


@app.command("bench-http")
def bench_http_command(
    url: Annotated[str, typer.Argument(help="Base URL of a running `sk-deploy serve`, e.g. http://127.0.0.1:8000.")],
    images: Annotated[Path | None, typer.Option(help="Folder of JPEG/PNG/WebP pictures to post (the first 64; "
                                                "default: 8 generated PNG pictures).")] = None,
    concurrency: Annotated[str, typer.Option(help="Comma-separated numbers of concurrent clients, one step each.")]
    = "1,4,16,64",
    duration: Annotated[float, typer.Option(min=0.01, help="Seconds per step (in-flight requests then finish).")]
    = 10.0,
    max_requests: Annotated[int, typer.Option(min=1, help="Requests per step at most.")] = 10_000,
    timeout: Annotated[float, typer.Option(min=0.01, help="Seconds one request may take.")] = 30.0,
    top_k: Annotated[int, typer.Option(min=1, help="top_k asked of the service.")] = 5,
    out: Annotated[Path | None, typer.Option(help="Directory to write bench-http.json and bench-http.md to.")]
    = None,
    allow_remote: Annotated[bool, typer.Option(help="Allow a host that is not loopback (only a server you run).")]
    = False,
) -> None:
    """Load a running classification service over HTTP: a sweep of concurrent clients posting raw pictures to
    URL/v1/classify; requests/s, latency percentiles, errors by status, and the server's own batch sizes read
    from URL/metrics around each step. Bounded by --duration and --max-requests per step; loopback only unless
    --allow-remote. Ctrl-C keeps the finished steps (exit 130)."""
    import dataclasses
    import signal

    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from sk_deploy.bench.http_load import LoadConfig, LoadError, StepResult, check_url, load_payloads, run_sweep
    from sk_deploy.bench.report import build_http_report, http_table, write_http_report

    config = LoadConfig(url=url, concurrency=_split(concurrency, "--concurrency", int), duration_s=duration,
                        max_requests=max_requests, timeout_s=timeout, top_k=top_k, allow_remote=allow_remote)
    try:
        config = dataclasses.replace(config, url=check_url(url, allow_remote))
        payloads = load_payloads(images)
    except LoadError as exc:
        raise fail(str(exc)) from None
    command = (f"sk-deploy bench-http {config.url}" + (f" --images {images}" if images else "")
               + f" --concurrency {','.join(map(str, config.concurrency))} --duration {duration:g} "
               f"--max-requests {max_requests}")
    steps: list[StepResult] = []
    interrupted = False
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("waiting for the server")

        def on_step(step: StepResult) -> None:
            p50 = f"p50 {step.latency.p50:.1f} ms" if step.latency else "no successful request"
            bar.console.print(f"[green]done[/] {step.concurrency} clients: {step.requests} requests, "
                              f"{step.requests_per_s:.1f}/s, {p50}, {step.errors} errors", highlight=False)

        try:
            run_sweep(config, payloads, on_start=lambda n: bar.update(task, description=f"{n} clients"),
                      on_step=on_step, results=steps)
        except LoadError as exc:
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            interrupted = True
    if interrupted:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    report = build_http_report(config, steps, len(payloads), command, interrupted)
    console.print(http_table(report))
    if out is not None:
        written = write_http_report(report, out)
        console.print(f"[green]wrote[/] {', '.join(str(p) for p in written)}", highlight=False, soft_wrap=True)
    if interrupted:
        raise fail(f"interrupted after {len(steps)} step(s)" + (f"; partial report in {out}" if out else ""), code=130)


@app.command("triton-repo")
def triton_repo_command(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory (from `sk-deploy export`).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model repository directory; the model goes into "
                                      "OUT/<model>/ (other models there are left alone).")],
    backend: Annotated[str, typer.Option(help="onnxruntime (platform onnxruntime_onnx, the bundle's ONNX graph), "
                                         "tensorrt (tensorrt_plan, an engine from `sk-deploy build`) or openvino "
                                         "(Triton's OpenVINO backend on the CPU, the bundle's ONNX graph).")]
    = "onnxruntime",
    precision: Annotated[str, typer.Option(help="fp32, fp16 or int8: which graph or engine of the bundle; bf16 with "
                                           "--backend openvino.")] = "fp32",
    device: Annotated[str | None, typer.Option(help="Instance kind: gpu (KIND_GPU) or cpu (KIND_CPU); int8 on cpu "
                                               "takes model.int8-cpu.onnx first (default: cpu for openvino, else "
                                               "gpu).")] = None,
    max_batch: Annotated[int | None, typer.Option(help="max_batch_size (default and upper bound: the bundle's "
                                                  "batch profile maximum, or the engine's).")] = None,
    preferred_batch: Annotated[list[int] | None, typer.Option(help="A preferred batch size for the dynamic "
                                                              "batcher (repeat; default none).")] = None,
    max_queue_delay_us: Annotated[int, typer.Option(help="How long the dynamic batcher may hold a request to fill "
                                                    "a batch, in microseconds.")] = 2000,
    instances: Annotated[int, typer.Option(help="Model instances (instance_group count) per GPU, or on the CPU.")]
    = 1,
    name: Annotated[str | None, typer.Option(help="Model name in Triton (default: the bundle's model name).")]
    = None,
    engine: Annotated[str | None, typer.Option(help="With --backend tensorrt: the engine file of the bundle to "
                                               "export (default: the first of that precision).")] = None,
    ort_tensorrt: Annotated[bool, typer.Option(help="With --backend onnxruntime on a GPU: run the graph through ONNX "
                                               "Runtime's TensorRT provider (precision_mode from --precision).")]
    = False,
    force: Annotated[bool, typer.Option(help="Replace an existing OUT/<model>/ directory.")] = False,
) -> None:
    """Write a Triton Inference Server model repository from a bundle: OUT/<model>/config.pbtxt (dynamic batching,
    instance group, I/O read from the graph), OUT/<model>/1/model.onnx or model.plan, OUT/<model>/labels.txt."""
    from sk_deploy.deploy.triton import TritonRequest, write_repository

    request = TritonRequest(bundle=bundle, out=out, backend=backend, precision=precision, device=device,
                            max_batch=max_batch, preferred_batch=tuple(preferred_batch or ()),
                            max_queue_delay_us=max_queue_delay_us, instances=instances, name=name, engine=engine,
                            ort_tensorrt=ort_tensorrt, force=force)
    try:
        with err_console.status("writing the model repository...") as status:
            result = write_repository(request, progress=lambda message: status.update(f"{message}..."))
    except _user_errors() as exc:
        raise fail(str(exc)) from None
    plan = result.plan
    for warning in plan.warnings:
        err_console.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    batching = f"max batch {plan.max_batch}, queue delay {plan.max_queue_delay_us} us" + (
        f", preferred {', '.join(map(str, plan.preferred_batch))}" if plan.preferred_batch else "")
    console.print(f"[green]wrote[/] {result.path}: {plan.platform} from {plan.source}, input {plan.input.name} "
                  f"{plan.input.data_type} {list(plan.input.dims)}, output {plan.output.name} {plan.output.data_type} "
                  f"{list(plan.output.dims)}, {batching}, {plan.instances} x {plan.kind}", highlight=False,
                  soft_wrap=True)
    console.print(f"serve it: tritonserver --model-repository={result.path.parent}", highlight=False, soft_wrap=True)


@app.command("prepare")
def prepare_command(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory (in a container: the mounted volume).")],
    precision: Annotated[str, typer.Option(help="Precision to serve: fp32, fp16 or int8 (the engine to find or "
                                           "build).")] = "fp32",
    build_engine: Annotated[str, typer.Option(help="auto (build a TensorRT engine when there is a GPU and TensorRT "
                                              "and no engine for them), always, or never.")] = "auto",
    work_dir: Annotated[Path | None, typer.Option(help="Writable directory for a copy of a read-only bundle, "
                                                  "where the engine is built (a persistent volume keeps it).")]
    = None,
) -> None:
    """Make a bundle ready to serve: check every file, build a TensorRT engine for this GPU if it has none.
    Prints the bundle directory to serve (the image's entrypoint passes it to `sk-deploy serve`)."""
    from sk_deploy.deploy.container import PrepareRequest, prepare

    request = PrepareRequest(bundle=bundle, precision=precision, build=build_engine, work_dir=work_dir)
    try:
        with err_console.status("preparing the bundle...") as status:
            prepared = prepare(request, progress=lambda message: status.update(f"{message}..."))
    except _user_errors() as exc:
        raise fail(str(exc)) from None
    err_console.print(f"[dim]prepare:[/] {prepared.reason}", highlight=False, soft_wrap=True)
    print(prepared.bundle)


def main() -> None:
    """Entry point for ``python -m sk_deploy``."""
    app()
