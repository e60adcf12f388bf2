"""``sk-deploy triton-repo`` (a Triton model repository) and ``sk-deploy prepare`` (a container's start)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sk_deploy.cli import render
from sk_deploy.cli.common import UserError, app, err_console, fail, file_settings, items, note, renamed, waiting
from sk_deploy.images import MAX_ASPECT, MAX_PICTURE_BYTES, MAX_PIXELS


@app.command("triton-repo")
def triton_repo_command(
    ctx: typer.Context,
    bundle: Annotated[Path, typer.Argument(help="Bundle directory (from `sk-deploy export`).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Model repository directory; the model goes into "
                                      "OUT/<model>/ (other models there are left alone).")],
    backend: Annotated[str, typer.Option(help="onnxruntime (platform onnxruntime_onnx, the bundle's ONNX graph), "
                                         "tensorrt (tensorrt_plan, an engine from `sk-deploy build`), openvino "
                                         "(Triton's OpenVINO backend on the CPU, the bundle's ONNX graph) or python "
                                         "(Triton's Python backend running the whole bundle through sk-deploy's "
                                         "Predictor; the server's Python needs sk-deploy).")]
    = "onnxruntime",
    precision: Annotated[str, typer.Option(help="fp32, fp16 or int8: which graph or engine of the bundle; bf16 with "
                                           "--backend openvino or python.")] = "fp32",
    runtime: Annotated[str, typer.Option(help="With --backend python: the backend sk-deploy's Predictor runs "
                                         "(auto: the fastest the serving machine runs, as `sk-deploy serve` "
                                         "picks; or tensorrt, ort-tensorrt, ort-cuda, ort-cpu, openvino, torch).")]
    = "auto",
    ensemble: Annotated[bool, typer.Option(help="Also write <model>_preprocess (encoded pictures, BYTES, decoded "
                                           "and preprocessed as the bundle says, on Triton's Python backend) and "
                                           "<model>_ensemble (pictures in, the model's logits and labels out).")]
    = False,
    max_pixels: Annotated[int, typer.Option(min=1, help="With --ensemble: largest picture, in pixels, decoded "
                                            "(checked from its header, before decoding).")] = MAX_PIXELS,
    max_aspect_ratio: Annotated[float, typer.Option(min=1, help="With --ensemble: longest over shortest side of a "
                                                    "picture decoded (checked from its header).")] = MAX_ASPECT,
    max_picture_mb: Annotated[float, typer.Option(min=0.001, help="With --ensemble: largest encoded picture.")]
    = MAX_PICTURE_BYTES / 2**20,
    instance_kind: Annotated[str | None, typer.Option(help="Triton instance kind: gpu (KIND_GPU) or cpu (KIND_CPU); "
                                                      "int8 on cpu takes model.int8-cpu.onnx first (default: cpu "
                                                      "for openvino, else gpu, said when taken).")] = None,
    max_batch: Annotated[int | None, typer.Option(help="max_batch_size (default and upper bound: the bundle's "
                                                  "batch profile maximum, or the engine's).")] = None,
    preferred_batch_sizes: Annotated[list[str] | None, typer.Option(help="Preferred batch sizes for the dynamic "
                                                                    "batcher, comma-separated (default none).")]
    = None,
    max_queue_delay_ms: Annotated[float, typer.Option(help="How long the dynamic batcher may hold a request to fill "
                                                      "a batch, in milliseconds.")] = 2.0,
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
    config_file: Annotated[Path | None, typer.Option("--config", help="TOML file of serving settings (table serving: "
                                                     "max_batch -> max_batch_size, max_delay_ms -> "
                                                     "max_queue_delay_microseconds, instances -> instance_group "
                                                     "count; from `sk-deploy tune`); options given here win over "
                                                     "it.")] = None,
    device: Annotated[str | None, typer.Option(hidden=True, help="Deprecated: --instance-kind.")] = None,
    preferred_batch: Annotated[list[str] | None, typer.Option(hidden=True, help="Deprecated: "
                                                              "--preferred-batch-sizes.")] = None,
    max_queue_delay_us: Annotated[int | None, typer.Option(hidden=True, help="Deprecated: --max-queue-delay-ms.")]
    = None,
) -> None:
    """Write a Triton Inference Server model repository from a bundle: OUT/<model>/config.pbtxt (dynamic batching,
    instance group, I/O read from the graph), OUT/<model>/1/model.onnx, model.plan or model.py with the bundle,
    OUT/<model>/labels.txt; with --ensemble, OUT/<model>_preprocess and OUT/<model>_ensemble (pictures in)."""
    from sk_deploy.deploy.triton import DEFAULT_KINDS, TritonRequest, write_repository

    chosen = file_settings(ctx, config_file, {"max_batch": ("max_batch",),
                                              "max_delay_ms": ("max_queue_delay_ms", "max_queue_delay_us"),
                                              "instances": ("instances",)})
    max_batch = chosen.get("max_batch", max_batch)
    max_queue_delay_ms = chosen.get("max_delay_ms", max_queue_delay_ms)
    instances = chosen.get("instances", instances)
    instance_kind = renamed(instance_kind, device, "--device", "--instance-kind")
    if instance_kind is None and backend not in DEFAULT_KINDS:  # the OpenVINO and Python backends: KIND_CPU
        instance_kind = "gpu"
        note("--instance-kind gpu (the default): KIND_GPU instances; --instance-kind cpu for a Triton without a GPU")
    sizes_name = "--preferred-batch" if preferred_batch else "--preferred-batch-sizes"
    preferred = renamed(preferred_batch_sizes, [",".join(preferred_batch)] if preferred_batch else None,
                        "--preferred-batch", "--preferred-batch-sizes")
    delay_us = renamed(round(max_queue_delay_ms * 1000), max_queue_delay_us, "--max-queue-delay-us",
                       "--max-queue-delay-ms")
    request = TritonRequest(bundle=bundle, out=out, backend=backend, precision=precision, device=instance_kind,
                            max_batch=max_batch, preferred_batch=items(preferred, sizes_name, cast=int),
                            max_queue_delay_us=delay_us, instances=instances, name=name, engine=engine,
                            ort_tensorrt=ort_tensorrt, force=force, runtime=runtime, ensemble=ensemble,
                            max_pixels=max_pixels, max_aspect=max_aspect_ratio,
                            max_picture_bytes=round(max_picture_mb * 2**20))
    try:
        with waiting("writing the model repository...") as status:
            result = write_repository(request, progress=lambda message: status.update(f"{message}..."))
    except UserError as exc:
        raise fail(str(exc)) from None
    for warning in result.plan.warnings:
        note(warning, label="warning")
    render.triton_lines(result)


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
        with waiting("preparing the bundle...") as status:
            prepared = prepare(request, progress=lambda message: status.update(f"{message}..."))
    except UserError as exc:
        raise fail(str(exc)) from None
    err_console.print(f"[dim]prepare:[/] {prepared.reason}", highlight=False, soft_wrap=True)
    print(prepared.bundle)
