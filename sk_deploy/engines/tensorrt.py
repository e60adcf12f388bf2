"""``sk-deploy build``: a bundle's ONNX graph of one precision -> a TensorRT engine (``.plan``) in the bundle.

TensorRT 11 networks are strongly typed: the graph carries its precision (float16 compute in
``model.fp16.onnx``, explicit Q/DQ in ``model.int8.onnx``) and there are no precision flags. TensorRT 10 builds
the same graphs with the FP16 / INT8 builder flags; which applies is decided from the installed version.
The engine's metadata (TensorRT version, GPU, profile, source sha256, build seconds, sizes) goes into the
manifest, where ``engines.compat`` reads it before anything is deserialized.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sk_deploy.backends import backend
from sk_deploy.bundle import Bundle, BundleError, MissingGraph, atomic_path, atomic_write_bytes, sha256_file
from sk_deploy.engines.compat import engine_file_name
from sk_deploy.engines.inspect import InspectionError, PrecisionSummary, check_requested, summarize
from sk_deploy.errors import SkDeployError
from sk_deploy.machine import import_tensorrt, require_cuda
from sk_deploy.settings.base import defaults
from sk_deploy.settings.precision import HARDWARE_COMPAT, BuildSettings

#: What an engine is built at: the precisions the backend table's tensorrt entry runs.
ENGINE_PRECISIONS = tuple(str(p) for p in backend("tensorrt").precisions)


class BuildError(SkDeployError, RuntimeError):
    """An engine that cannot be built (bad request, a graph TensorRT cannot parse); meant for a person."""


#: the command's defaults, from its settings model
BUILD = defaults(BuildSettings)


@dataclass(frozen=True)
class BuildRequest:
    """What ``sk-deploy build`` was asked for; ``batch_profile`` None takes the bundle's MIN:OPT:MAX."""

    bundle: Path
    precision: str = BUILD["precision"]
    batch_profile: tuple[int, int, int] | None = None
    workspace: float = BUILD["workspace"]
    timing_cache: Path | None = None
    hardware_compat: str = BUILD["hardware_compat"]


@dataclass(frozen=True)
class BuildPlan:
    """A checked request: the bundle, the source graph, the input and the batch profile."""

    bundle: Bundle
    source: str
    input_name: str
    input_shape: list[Any]
    batch: tuple[int, int, int]

    def profile_shapes(self) -> list[tuple[int, ...]]:
        """Input shapes for the min, opt and max batch (the batch axis is the first)."""
        dims = [int(d) for d in self.input_shape[1:]]
        return [(b, *dims) for b in self.batch]


def check_request(request: BuildRequest) -> BuildPlan:
    """Every check that needs neither TensorRT nor a GPU; a problem is a BuildError or BundleError."""
    if request.precision not in ENGINE_PRECISIONS:
        raise BuildError(f"unknown precision {request.precision!r} for a TensorRT engine; choose one of: "
                         f"{', '.join(ENGINE_PRECISIONS)}")
    if request.hardware_compat not in HARDWARE_COMPAT:
        raise BuildError(f"unknown hardware compatibility {request.hardware_compat!r}; "
                         f"choose one of: {', '.join(HARDWARE_COMPAT)}")
    if request.workspace <= 0:
        raise BuildError(f"workspace must be positive, got {request.workspace} GiB")
    bundle = Bundle.open(request.bundle)
    try:
        source = bundle.graph(request.precision, "gpu")
    except MissingGraph as exc:
        raise BuildError(f"{bundle.path}: no {exc.forms[0].file} to build the {request.precision} engine from; "
                         f"make it first: {exc.make}") from None
    bundle.check_file(source)
    batch = request.batch_profile or bundle.batch_profile
    if not 1 <= batch[0] <= batch[1] <= batch[2]:
        raise BuildError(f"batch {':'.join(map(str, batch))} must satisfy 1 <= MIN <= OPT <= MAX")
    return BuildPlan(bundle, source, bundle.input_name, bundle.input_shape, batch)


def major_version(trt: Any) -> int:
    """TensorRT's major version (10, 11, ...)."""
    return int(str(trt.__version__).split(".")[0])


def parse_errors(parser: Any, source: str) -> str:
    """The ONNX parser's errors, each with the failing node's name and op where TensorRT gives them."""
    lines = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        node = getattr(error, "node_name", lambda: "")() or f"#{error.node()}"
        op = getattr(error, "node_operator", lambda: "")()
        lines.append(f"node {node}{f' ({op})' if op else ''}: {error.desc()}")
    return f"{source}: TensorRT cannot parse the graph: " + "; ".join(lines or ["no error recorded"])


def progress_monitor(trt: Any, report: Callable[[str], None]) -> Any:
    """A TensorRT IProgressMonitor that reports each build phase (and its steps) to ``report``."""

    class Monitor(trt.IProgressMonitor):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.steps: dict[str, int] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            self.steps[phase_name] = num_steps
            report(phase_name)

        def step_complete(self, phase_name: str, step: int) -> bool:
            report(f"{phase_name} {step + 1}/{self.steps.get(phase_name, '?')}")
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            self.steps.pop(phase_name, None)

    return Monitor()


def inspect_engine(trt: Any, engine: Any, precision: str, source: str) -> PrecisionSummary:
    """The engine's layer precision from its inspector; a BuildError when an FP16/INT8 build has none."""
    information = engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON)
    try:
        summary = summarize(information)
        check_requested(summary, precision, source)
    except InspectionError as exc:
        raise BuildError(f"{source}: {exc}") from None
    return summary


def build_engine(request: BuildRequest, progress: Callable[[str], None] = lambda _: None) -> tuple[str, dict[str, Any]]:
    """Build the engine, write it into the bundle and record it; returns its file name and manifest entry."""
    plan = check_request(request)
    trt = import_tensorrt()
    require_cuda("building a TensorRT engine")
    import torch

    major = major_version(trt)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch always (10); strongly typed always (11)
    parser = trt.OnnxParser(network, logger)
    progress(f"parsing {plan.source}")
    if not parser.parse_from_file(str(plan.bundle.path / plan.source)):
        raise BuildError(parse_errors(parser, plan.source))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(request.workspace * (1 << 30)))
    if major < 11 and request.precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)  # TensorRT 10 is weakly typed: precision comes from flags
        if request.precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
    tf32 = getattr(trt.BuilderFlag, "TF32", None)
    if tf32 is not None and request.precision != "tf32":
        config.clear_flag(tf32)  # on by default: an fp32 engine is IEEE fp32, tf32 is asked for by name
    if request.hardware_compat != "none":
        level = {"ampere+": "AMPERE_PLUS", "same-cc": "SAME_COMPUTE_CAPABILITY"}[request.hardware_compat]
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, level)
    profile = builder.create_optimization_profile()
    profile.set_shape(plan.input_name, *plan.profile_shapes())
    config.add_optimization_profile(profile)
    cache_path = request.timing_cache
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path and cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    config.progress_monitor = progress_monitor(trt, progress)
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # layer types for the inspector (below)

    progress("building (minutes on a large network)")
    start = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - start
    if serialized is None:
        raise BuildError(f"{plan.source}: TensorRT could not build an engine (its messages are above)")
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cache_path, bytes(config.get_timing_cache().serialize()))
    engine = trt.Runtime(logger).deserialize_cuda_engine(serialized)
    memory = getattr(engine, "device_memory_size_v2", None) or getattr(engine, "device_memory_size", 0)
    precision = inspect_engine(trt, engine, request.precision, plan.source)  # refuses before any file is written

    gpu_name = torch.cuda.get_device_name(0)
    name = engine_file_name(request.precision, gpu_name, str(trt.__version__))
    try:
        with atomic_path(plan.bundle.path / name) as tmp:
            tmp.write_bytes(bytes(serialized))
    except OSError as exc:
        raise BundleError(f"{plan.bundle.path / name}: cannot write the engine ({exc.strerror or exc})") from None
    entry = plan.bundle.add_file(
        name, role="engine", precision=request.precision,
        source={"file": plan.source, "sha256": sha256_file(plan.bundle.path / plan.source)},
        tensorrt={"version": str(trt.__version__), "strongly_typed": major >= 11,
                  "flags": [] if major >= 11 else {"fp32": [], "fp16": ["FP16"], "int8": ["FP16", "INT8"]}[
                      request.precision]},
        gpu={"name": gpu_name, "compute_capability": list(torch.cuda.get_device_capability(0))},
        hardware_compat=request.hardware_compat,
        profile={"input": plan.input_name, "min": plan.batch[0], "opt": plan.batch[1], "max": plan.batch[2]},
        build_seconds=round(seconds, 1), device_memory=int(memory), workspace_gib=request.workspace,
        timing_cache=str(cache_path) if cache_path else None, layer_precision=precision.to_dict(),
    )
    plan.bundle.save()
    return name, entry
