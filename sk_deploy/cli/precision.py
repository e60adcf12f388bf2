"""``sk-deploy quantize`` (FP16/INT8 graphs) and ``sk-deploy build`` (TensorRT engines)."""

from __future__ import annotations

from sk_deploy.cli import render
from sk_deploy.cli.common import console, err_console, fail, note, one_number_profile, waiting
from sk_deploy.cli.options import command
from sk_deploy.errors import SkDeployError
from sk_deploy.precisions import Precision
from sk_deploy.settings.precision import BuildSettings, QuantizeSettings


@command(QuantizeSettings)
def quantize_command(settings: QuantizeSettings) -> None:
    """Add an FP16 or INT8 graph to a bundle, calibrated on real photos and gated on its accuracy vs float32; or
    measure bf16 against float32 (no file) and record its figures in the manifest."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sk_deploy.precision.pipeline import quantize_bundle, resolve_target

    bundle, precision, as_json = settings.bundle, settings.precision, settings.as_json
    request = resolve_target(settings)
    if precision == "int8" and settings.target == "auto":
        _said_int8_target(request.target)
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
        except SkDeployError as exc:
            raise fail(str(exc)) from None
    a = result.accuracy
    if "auto_exclude" in result.details:
        from sk_deploy.precision.sensitivity import describe_search

        for line in describe_search(result.details["auto_exclude"]):
            (err_console if as_json else console).print(line, highlight=False, soft_wrap=True)
    if as_json:
        render.as_json({"file": result.file, "written": result.written, "accuracy": a,
                        "backends": result.details.get("backends")})
    else:
        render.accuracy_table([a], f"{result.file} vs model.onnx on {a.agreement.images} held-out pictures")
    for message in a.notes:
        note(message)
    if not a.passed:
        kept = "kept anyway (--no-gate)" if result.written else "not added to the bundle"
        raise fail(f"{result.file} misses its accuracy gate ({'; '.join(a.failures)}); {kept}")
    out = err_console if as_json else console
    for line in _backend_lines(result.details.get("backends") or {}):
        out.print(line, highlight=False, soft_wrap=True)
    if Precision(precision).hint:
        out.print(f"[green]recorded[/] the {precision} figures in {bundle / 'manifest.json'} (stages.precision."
                  f"{precision}); no file is needed: serve or predict with --precision {precision}", highlight=False,
                  soft_wrap=True)
        return
    out.print(f"[green]wrote[/] {bundle / result.file}", highlight=False, soft_wrap=True)


def _backend_lines(backends: dict) -> list[str]:
    """One line per CPU backend the graph was judged on: whether its gate passed there (what licenses
    ``--precision auto`` to serve it there)."""
    lines = []
    for name, gate in backends.items():
        if "not_measured" in gate:
            lines.append(f"{name}: gate not measured ({gate['not_measured']}); auto will not serve it there")
            continue
        figures = gate["accuracy"]
        verdict = "passed" if figures["passed"] else f"failed ({'; '.join(figures['failures'])})"
        bf16 = gate.get("bf16_float_parts")
        parts = f"; with bf16 float parts {'passed' if bf16.get('passed') else 'not passed'}" if bf16 else ""
        lines.append(f"{name}: gate {verdict}, mean cosine {figures['cosine_mean']:.5f}{parts}"
                     + ("" if figures["passed"] else "; auto will not serve it there"))
    return lines


def _said_int8_target(chosen: str) -> None:
    """``--target auto``'s choice for int8, and why, in one line."""
    from sk_deploy.machine import probe_machine

    machine = probe_machine()
    why = f"{machine.gpu_name} here" if machine.cuda else "no CUDA GPU here, and ONNX Runtime runs the TensorRT form " \
        "slower than float32 on a CPU"
    note(f"--target auto: the {chosen} int8 form ({why}); --target tensorrt or cpu to choose")


@command(BuildSettings)
def build_command(settings: BuildSettings) -> None:
    """Build a TensorRT engine from the bundle's graph of that precision: model.<precision>.<gpu>.trt<ver>.plan,
    recorded in the manifest with its TensorRT version, GPU, profile and sizes. Needs a GPU and TensorRT."""
    from sk_deploy.engines.tensorrt import BuildRequest, build_engine, check_request
    from sk_deploy.graph.pipeline import BatchProfile

    bundle, precision = settings.bundle, settings.precision
    try:
        one_number_profile(settings.batch_profile)
        profile = BatchProfile.parse(settings.batch_profile) if settings.batch_profile else None
        request = BuildRequest(bundle=bundle, precision=precision, workspace=settings.workspace,
                               timing_cache=settings.timing_cache, hardware_compat=settings.hardware_compat,
                               batch_profile=(profile.min, profile.opt, profile.max) if profile else None)
        check_request(request)
        with waiting(f"building {precision} engine...") as status:
            name, entry = build_engine(request, progress=lambda message: status.update(f"TensorRT: {message}..."))
    except SkDeployError as exc:
        raise fail(str(exc)) from None
    render.engine_line(str(bundle / name), entry)
