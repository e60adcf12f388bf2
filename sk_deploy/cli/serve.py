"""``sk-deploy serve``: a bundle (or a model name, exported first) over HTTP, and with ``--grpc-port`` over gRPC."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sk_deploy.cli import render
from sk_deploy.cli.common import UserError, app, err_console, fail, file_settings, renamed, split, waiting


@app.command("serve")
def serve_command(
    ctx: typer.Context,
    target: Annotated[str, typer.Argument(metavar="BUNDLE|MODEL", help="A bundle directory, or a registered model "
                                          "name to export first (into ~/.cache/sk-deploy/bundles, reused).")],
    backend: Annotated[str, typer.Option(help="auto, tensorrt, ort-tensorrt, ort-cuda, ort-cpu, openvino or "
                                         "torch.")] = "auto",
    precision: Annotated[str, typer.Option(help="auto (the fastest precision whose gate passed for this bundle and "
                                           "runs here, said in one line), fp32, fp16, int8 (the bundle must hold "
                                           "that graph), bf16 (openvino, on a CPU with native bfloat16) or tf32 "
                                           "(the fp32 graph with TensorFloat-32, GPUs only).")] = "auto",
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0 for every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port (0: any free one, printed).")] = 8000,
    grpc_port: Annotated[int | None, typer.Option(min=0, max=65535, help="Also serve KServe v2 over gRPC on this "
                                                  "port of --host (0: any free one, printed); default: HTTP only.")]
    = None,
    max_batch: Annotated[int, typer.Option(min=1, help="Largest batch the batcher forms.")] = 32,
    batch_buckets: Annotated[str, typer.Option(help="Batch sizes to pad batches to, comma-separated (1,4,16,32), "
                                               "for a backend that captures CUDA graphs (one graph per size); "
                                               "default: the powers of two up to --max-batch.")] = "",
    max_delay_ms: Annotated[float, typer.Option(min=0, help="Longest wait for a batch to fill, from its first "
                                                "picture's arrival.")] = 2.0,
    max_queue: Annotated[int, typer.Option(min=1, help="Pictures allowed to wait; beyond, 429 with Retry-After.")]
    = 256,
    instances: Annotated[int, typer.Option(min=1, help="Inference threads taking batches from the one queue, each "
                                           "with its share of the cores (ort-cpu and openvino; others run one).")]
    = 1,
    config_file: Annotated[Path | None, typer.Option("--config", help="TOML file of serving settings (table serving: "
                                                     "max_batch, max_delay_ms, instances; from `sk-deploy tune`); "
                                                     "options given here win over it.")] = None,
    timeout_ms: Annotated[float, typer.Option(min=1, help="A request's deadline; past it, 504 and dropped from the "
                                              "queue.")] = 5000.0,
    max_body_mb: Annotated[float, typer.Option(min=0.001, help="Largest request body; beyond, 413.")] = 16.0,
    max_pixels: Annotated[int, typer.Option(min=1, help="Largest picture, in pixels, decoded (decompression "
                                            "bombs are refused before decoding).")] = 40_000_000,
    max_aspect_ratio: Annotated[float, typer.Option(min=1, help="Longest over shortest side of a picture decoded "
                                                    "(checked from its header; beyond, 400).")] = 32.0,
    decode_threads: Annotated[int, typer.Option(min=0, help="Threads decoding pictures (0: one per CPU, at most "
                                                "4).")] = 0,
    header_timeout_ms: Annotated[float, typer.Option(min=1, help="A request's headers must arrive within this "
                                                     "long; beyond, 408 and the connection closed.")] = 10_000.0,
    body_timeout_ms: Annotated[float, typer.Option(min=1, help="A request's body must arrive within this long "
                                                   "after its headers; beyond, 408 and the connection closed.")]
    = 30_000.0,
    max_connections: Annotated[int, typer.Option(min=1, help="Open connections allowed; beyond, 503 and closed.")]
    = 1024,
    drain_ms: Annotated[float, typer.Option(min=0, help="On SIGTERM/Ctrl-C, answer 503 to new requests this long "
                                            "before stopping; in-flight ones finish.")] = 1000.0,
    weights: Annotated[Path | None, typer.Option(help="With a model name: checkpoint to export.")] = None,
    pretrained: Annotated[bool, typer.Option(help="With a model name: the timm checkpoint from the hub.")] = False,
    log_level: Annotated[str, typer.Option(help="uvicorn log level: critical, error, warning, info, debug.")]
    = "info",
    access_log: Annotated[bool, typer.Option(help="Log every request (one line each).")] = True,
    drain_seconds: Annotated[float | None, typer.Option(min=0, hidden=True, help="Deprecated: --drain-ms.")] = None,
) -> None:
    """Serve a bundle over HTTP: /v1/classify, KServe v2 (/v2/...), /healthz, /readyz, /metrics; with --grpc-port
    KServe v2 over gRPC too, on the same batcher. Dynamic batching on one inference thread (--instances: more,
    where the backend allows). The model loads and warms up after the server starts (/readyz turns 200)."""
    from sk_deploy.service.listen import bind, reserve

    try:
        sock = bind(host, port)  # a busy port fails here, at once, before anything loads
        grpc_socket = reserve(host, grpc_port) if grpc_port is not None else None
    except UserError as exc:
        raise fail(str(exc)) from None
    from sk_deploy.runtime.auto_precision import resolve_precision
    from sk_deploy.runtime.availability import probe_machine
    from sk_deploy.runtime.instances import instances_refusal
    from sk_deploy.runtime.predictor import plan
    from sk_deploy.service.app import ServiceConfig
    from sk_deploy.service.batcher import check_buckets
    from sk_deploy.service.server import serve
    from sk_deploy.service.target import resolve_target

    chosen = file_settings(ctx, config_file, {"max_batch": ("max_batch",), "max_delay_ms": ("max_delay_ms",),
                                              "instances": ("instances",)})
    max_batch = chosen.get("max_batch", max_batch)
    max_delay_ms = chosen.get("max_delay_ms", max_delay_ms)
    instances = chosen.get("instances", instances)
    buckets = split(batch_buckets, "--batch-buckets", int) or None
    if buckets:
        try:
            buckets = check_buckets(buckets, max_batch)
        except ValueError as exc:
            raise fail(f"--batch-buckets: {exc}") from None
    drain_ms = renamed(drain_ms, drain_seconds, "--drain-seconds", "--drain-ms", lambda seconds: seconds * 1000)
    try:
        with waiting(f"preparing {target}...") as status:
            bundle, exported = resolve_target(target, weights, pretrained,
                                              progress=lambda message: status.update(f"{message}..."))
            machine = probe_machine()
            chosen_precision = resolve_precision(bundle, backend, precision, machine)
            choice = plan(bundle, backend, chosen_precision.precision, machine)  # a backend it lacks: one line now
    except UserError as exc:
        raise fail(str(exc)) from None
    refusal = instances_refusal(choice.backend) if instances > 1 else None
    if refusal:
        raise fail(f"--instances {instances}: {choice.backend} runs one instance ({refusal})")
    bundle_dir = bundle.path
    if exported:
        err_console.print(f"exported {target} to {bundle_dir}", highlight=False)
    err_console.print(f"serving {bundle.model_name} from {bundle_dir} on {choice.backend} "
                      f"{chosen_precision.precision}: {choice.reason}", highlight=False, soft_wrap=True)
    err_console.print(f"precision {chosen_precision.reason}", highlight=False, soft_wrap=True)
    render.faster_tip(bundle, choice.backend, precision, machine)
    config = ServiceConfig(bundle=bundle_dir, backend=backend, precision=precision, max_batch=max_batch,
                           max_delay_ms=max_delay_ms, max_queue=max_queue, timeout_ms=timeout_ms,
                           max_body_mb=max_body_mb, max_pixels=max_pixels, max_aspect_ratio=max_aspect_ratio,
                           decode_threads=decode_threads, header_timeout_ms=header_timeout_ms,
                           body_timeout_ms=body_timeout_ms, max_connections=max_connections,
                           batch_buckets=buckets, instances=instances)
    error = serve(config, host=host, port=port, drain_seconds=drain_ms / 1000, log_level=log_level,
                  access_log=access_log, sock=sock, grpc_socket=grpc_socket)
    if error:
        raise fail(f"cannot serve {bundle_dir}: {error}")
