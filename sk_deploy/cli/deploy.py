"""``sk-deploy triton-repo`` (a Triton model repository) and ``sk-deploy prepare`` (a container's start)."""

from __future__ import annotations

from sk_deploy.cli import render
from sk_deploy.cli.common import err_console, fail, note, waiting, with_config
from sk_deploy.cli.options import command
from sk_deploy.errors import SkDeployError
from sk_deploy.settings.deploy import PrepareSettings, TritonSettings


@command(TritonSettings)
def triton_repo_command(settings: TritonSettings) -> None:
    """Write a Triton Inference Server model repository from a bundle: OUT/<model>/config.pbtxt (dynamic batching,
    instance group, I/O read from the graph), OUT/<model>/1/model.onnx, model.plan or model.py with the bundle,
    OUT/<model>/labels.txt; with --ensemble, OUT/<model>_preprocess and OUT/<model>_ensemble (pictures in)."""
    from sk_deploy.deploy.triton import DEFAULT_KINDS, TritonRequest, write_repository

    settings = with_config(settings, {"max_batch": "max_batch", "max_delay_ms": "max_queue_delay_ms",
                                      "instances": "instances"})
    instance_kind = settings.instance_kind
    if instance_kind is None and settings.backend not in DEFAULT_KINDS:  # the OpenVINO and Python backends: KIND_CPU
        instance_kind = "gpu"
        note("--instance-kind gpu (the default): KIND_GPU instances; --instance-kind cpu for a Triton without a GPU")
    request = TritonRequest(bundle=settings.bundle, out=settings.out, backend=settings.backend,
                            precision=settings.precision, instance_kind=instance_kind, max_batch=settings.max_batch,
                            preferred_batch_sizes=settings.preferred_batch_sizes,
                            max_queue_delay_ms=settings.max_queue_delay_ms, instances=settings.instances,
                            name=settings.name, engine=settings.engine, ort_tensorrt=settings.ort_tensorrt,
                            force=settings.force, runtime=settings.runtime, ensemble=settings.ensemble,
                            max_pixels=settings.max_pixels, max_aspect_ratio=settings.max_aspect_ratio,
                            max_picture_mb=settings.max_picture_mb)
    try:
        with waiting("writing the model repository...") as status:
            result = write_repository(request, progress=lambda message: status.update(f"{message}..."))
    except SkDeployError as exc:
        raise fail(str(exc)) from None
    for warning in result.plan.warnings:
        note(warning, label="warning")
    render.triton_lines(result)


@command(PrepareSettings)
def prepare_command(settings: PrepareSettings) -> None:
    """Make a bundle ready to serve: check every file, build a TensorRT engine for this GPU if it has none.
    Prints the bundle directory to serve (the image's entrypoint passes it to `sk-deploy serve`)."""
    from sk_deploy.deploy.container import PrepareRequest, prepare

    request = PrepareRequest(bundle=settings.bundle, precision=settings.precision, build=settings.build_engine,
                             work_dir=settings.work_dir)
    try:
        with waiting("preparing the bundle...") as status:
            prepared = prepare(request, progress=lambda message: status.update(f"{message}..."))
    except SkDeployError as exc:
        raise fail(str(exc)) from None
    err_console.print(f"[dim]prepare:[/] {prepared.reason}", highlight=False, soft_wrap=True)
    print(prepared.bundle)
