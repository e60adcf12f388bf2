"""``sk-deploy quantize`` (FP16/INT8 graphs) and ``sk-deploy build`` (TensorRT engines)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sk_deploy.cli import render
from sk_deploy.cli.common import (
    UserError,
    app,
    console,
    err_console,
    fail,
    items,
    note,
    one_number_profile,
    renamed,
    waiting,
)
from sk_deploy.precisions import Precision


@app.command("quantize")
def quantize_command(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory (from `sk-deploy export`).")],
    precision: Annotated[str, typer.Option(help="The graph to add: fp16 or int8 (required: fp32 is the bundle's "
                                           "own); or bf16 (no file: the float32 graph in bf16 on OpenVINO, "
                                           "measured and gated; needs a CPU with native bfloat16).")],
    target: Annotated[str, typer.Option(help="int8 form: auto (tensorrt with a CUDA GPU here, else cpu), tensorrt "
                                        "(QDQ, symmetric int8) or cpu (U8S8, what ONNX Runtime runs fast on a CPU).")]
    = "auto",
    images: Annotated[Path | None, typer.Option(help="Folder of photos to calibrate on and measure accuracy on "
                                                "(JPEG/PNG); int8 needs it.")] = None,
    calib_size: Annotated[int, typer.Option(help="Photos of --images to calibrate on (a fixed-seed subset).")] = 256,
    holdout_size: Annotated[int, typer.Option(help="Other photos of --images to measure accuracy on.")] = 64,
    method: Annotated[str, typer.Option(help="Calibration: minmax, entropy or percentile.")] = "minmax",
    exclude: Annotated[list[str] | None, typer.Option(help="Op types or node names to keep float32, "
                                                      "comma-separated.")] = None,
    gate: Annotated[bool, typer.Option(help="Refuse a graph that misses its accuracy gate.")] = True,
    high_precision: Annotated[str | None, typer.Option(help="int8: type of the non-quantized part, fp16 or fp32 "
                                                       "(default: fp16 for --target tensorrt, fp32 for cpu).")]
    = None,
    auto_exclude: Annotated[bool, typer.Option(help="int8: if the gate fails, keep the fewest most sensitive "
                                               "layers float until it passes (reported, recorded).")] = False,
    calib: Annotated[Path | None, typer.Option(hidden=True, help="Deprecated: --images.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Add an FP16 or INT8 graph to a bundle, calibrated on real photos and gated on its accuracy vs float32; or
    measure bf16 against float32 (no file) and record its figures in the manifest."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sk_deploy.precision.pipeline import QuantizeRequest, quantize_bundle

    images = renamed(images, calib, "--calib", "--images")
    target = _int8_target(target) if precision == "int8" else ("tensorrt" if target == "auto" else target)
    request = QuantizeRequest(bundle=bundle, precision=precision, target=target, calib=images, calib_size=calib_size,
                              holdout_size=holdout_size, method=method, exclude=items(exclude, "--exclude"), gate=gate,
                              high_precision=high_precision, auto_exclude=auto_exclude)
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
        except UserError as exc:
            raise fail(str(exc)) from None
    a = result.accuracy
    if "auto_exclude" in result.details:
        from sk_deploy.precision.sensitivity import describe_search

        for line in describe_search(result.details["auto_exclude"]):
            (err_console if as_json else console).print(line, highlight=False, soft_wrap=True)
    if as_json:
        render.as_json({"file": result.file, "written": result.written, "accuracy": a})
    else:
        render.accuracy_table([a], f"{result.file} vs model.onnx on {a.agreement.images} held-out pictures")
    for message in a.notes:
        note(message)
    if not a.passed:
        kept = "kept anyway (--no-gate)" if result.written else "not added to the bundle"
        raise fail(f"{result.file} misses its accuracy gate ({'; '.join(a.failures)}); {kept}")
    out = err_console if as_json else console
    if Precision(precision).hint:
        out.print(f"[green]recorded[/] the {precision} figures in {bundle / 'manifest.json'} (stages.precision."
                  f"{precision}); no file is needed: serve or predict with --precision {precision}", highlight=False,
                  soft_wrap=True)
        return
    out.print(f"[green]wrote[/] {bundle / result.file}", highlight=False, soft_wrap=True)


def _int8_target(target: str) -> str:
    """``--target auto``: the form for where the bundle will run, taken as this machine (said in one line)."""
    if target != "auto":
        return target
    from sk_deploy.runtime.availability import probe_machine

    machine = probe_machine()
    chosen = "tensorrt" if machine.cuda else "cpu"
    why = f"{machine.gpu_name} here" if machine.cuda else "no CUDA GPU here, and ONNX Runtime runs the TensorRT form " \
        "slower than float32 on a CPU"
    note(f"--target auto: the {chosen} int8 form ({why}); --target tensorrt or cpu to choose")
    return chosen


@app.command("build")
def build_command(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory (from `sk-deploy export`, `sk-deploy quantize`).")],
    precision: Annotated[str, typer.Option(help="fp32 (model.onnx), fp16 (model.fp16.onnx) or int8 "
                                           "(model.int8.onnx, the TensorRT Q/DQ form).")] = "fp32",
    batch_profile: Annotated[str | None, typer.Option(help="Optimisation profile MIN:OPT:MAX (default: the "
                                                      "bundle's).")] = None,
    workspace: Annotated[float, typer.Option(help="Builder workspace limit in GiB.")] = 4.0,
    timing_cache: Annotated[Path | None, typer.Option(help="Timing cache to load and save (default: one per GPU "
                                                      "and TensorRT version under ~/.cache/sk-deploy).")] = None,
    hardware_compat: Annotated[str, typer.Option(help="none (this GPU model), same-cc (any GPU of this compute "
                                                 "capability) or ampere+ (any Ampere or newer GPU).")] = "none",
    batch: Annotated[str | None, typer.Option(hidden=True, help="Deprecated: --batch-profile.")] = None,
) -> None:
    """Build a TensorRT engine from the bundle's graph of that precision: model.<precision>.<gpu>.trt<ver>.plan,
    recorded in the manifest with its TensorRT version, GPU, profile and sizes. Needs a GPU and TensorRT."""
    from sk_deploy.engines.tensorrt import BuildRequest, build_engine, check_request
    from sk_deploy.graph.pipeline import BatchProfile

    try:
        batch_profile = renamed(batch_profile, batch, "--batch", "--batch-profile")
        one_number_profile(batch_profile)
        profile = BatchProfile.parse(batch_profile) if batch_profile else None
        request = BuildRequest(bundle=bundle, precision=precision, workspace_gib=workspace, timing_cache=timing_cache,
                               batch=(profile.min, profile.opt, profile.max) if profile else None,
                               hardware_compat=hardware_compat)
        check_request(request)
        with waiting(f"building {precision} engine...") as status:
            name, entry = build_engine(request, progress=lambda message: status.update(f"TensorRT: {message}..."))
    except UserError as exc:
        raise fail(str(exc)) from None
    render.engine_line(str(bundle / name), entry)
