"""``sk-deploy serve``: a bundle (or a model name, exported first) over HTTP, and with ``--grpc-port`` over gRPC."""

from __future__ import annotations

from sk_deploy.cli import render
from sk_deploy.cli.common import err_console, fail, waiting, with_config
from sk_deploy.cli.options import command
from sk_deploy.errors import SkDeployError
from sk_deploy.settings.serve import ServeSettings


@command(ServeSettings)
def serve_command(settings: ServeSettings) -> None:
    """Serve a bundle over HTTP: /v1/classify, KServe v2 (/v2/...), /healthz, /readyz, /metrics; with --grpc-port
    KServe v2 over gRPC too, on the same batcher. Dynamic batching on one inference thread (--instances: more,
    where the backend allows). The model loads and warms up after the server starts (/readyz turns 200)."""
    from sk_deploy.service.listen import bind, reserve

    try:
        sock = bind(settings.host, settings.port)  # a busy port fails here, at once, before anything loads
        grpc_socket = reserve(settings.host, settings.grpc_port) if settings.grpc_port is not None else None
    except SkDeployError as exc:
        raise fail(str(exc)) from None
    from sk_deploy.machine import probe_machine
    from sk_deploy.runtime.auto_precision import resolve_precision
    from sk_deploy.runtime.instances import instances_refusal
    from sk_deploy.runtime.predictor import plan
    from sk_deploy.service.app import ServiceConfig
    from sk_deploy.service.batcher import check_buckets
    from sk_deploy.service.server import serve
    from sk_deploy.service.target import export_target, open_target

    settings = with_config(settings, {key: key for key in ("max_batch", "max_delay_ms", "instances")})
    buckets = None
    if settings.batch_buckets:
        try:
            buckets = check_buckets(settings.batch_buckets, settings.max_batch)
        except ValueError as exc:
            raise fail(f"--batch-buckets: {exc}") from None
    target, precision = settings.target, settings.precision
    try:
        bundle = open_target(target, settings.weights, settings.pretrained)  # a bad target: one line, at once
        exported = False
        with waiting(f"preparing {target}...") as status:
            if bundle is None:  # a model name
                bundle, exported = export_target(target, settings.weights, settings.pretrained,
                                                 progress=lambda message: status.update(f"{message}..."))
            machine = probe_machine()
            chosen_precision = resolve_precision(bundle, settings.backend, precision, machine)
            choice = plan(bundle, settings.backend, chosen_precision.precision, machine)  # a backend it lacks: one line
    except SkDeployError as exc:
        raise fail(str(exc)) from None
    instances = settings.instances
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
    config = ServiceConfig(bundle=bundle_dir, backend=settings.backend, precision=precision,
                           max_batch=settings.max_batch, max_delay_ms=settings.max_delay_ms,
                           max_queue=settings.max_queue, timeout_ms=settings.timeout_ms,
                           max_body_mb=settings.max_body_mb, max_pixels=settings.max_pixels,
                           max_aspect_ratio=settings.max_aspect_ratio, decode_threads=settings.decode_threads,
                           header_timeout_ms=settings.header_timeout_ms, body_timeout_ms=settings.body_timeout_ms,
                           max_connections=settings.max_connections, batch_buckets=buckets, instances=instances)
    error = serve(config, host=settings.host, port=settings.port, drain_seconds=settings.drain_ms / 1000,
                  log_level=settings.log_level, access_log=settings.access_log, sock=sock, grpc_socket=grpc_socket)
    if error:
        raise fail(f"cannot serve {bundle_dir}: {error}")
