"""A bundle -> a Triton Inference Server model repository: ``<model>/config.pbtxt``, ``<model>/1/model.onnx`` (or
``model.plan``) and ``<model>/labels.txt`` for Triton's classification extension.

The configuration is taken from what the graph itself says (input and output names, element types and dims,
read with onnx) and from the bundle's manifest (batch profile, labels, engines). Which graph goes in:

- ``--backend onnxruntime`` (platform ``onnxruntime_onnx``): ``model.onnx``, ``model.fp16.onnx`` or, for int8,
  the form that suits the instance kind. On ``KIND_CPU`` that is ``model.int8-cpu.onnx`` (uint8 activations,
  int8 weights: what ONNX Runtime's CPU kernels run fast), else ``model.int8.onnx``. On ``KIND_GPU`` only
  ``model.int8.onnx`` (symmetric int8 Q/DQ) is right: ONNX Runtime's CUDA provider has no int8 convolutions and
  runs the Q/DQ pairs as float arithmetic, while its TensorRT provider (``--ort-tensorrt``) builds int8 kernels
  from exactly this form and rejects the asymmetric uint8 activations of the CPU form.
- ``--backend tensorrt`` (platform ``tensorrt_plan``): an engine from ``sk-deploy build`` in the bundle. A plan
  runs only with the TensorRT version that built it, on the GPU model it was built for: Triton's container must
  ship that TensorRT version.
- ``--backend openvino`` (``backend: "openvino"``, Triton's OpenVINO backend, ``KIND_CPU``): the ONNX graph the
  Predictor's openvino backend runs (``model.onnx`` for fp32 and bf16, ``model.int8.onnx`` first for int8),
  read by ``default_model_filename``; bf16 is its ``HINT_BF16`` parameter.
- ``--backend python`` (``backend: "python"``, Triton's Python backend): the bundle itself, copied to
  ``1/bundle``, run by sk-deploy's Predictor (``1/model.py`` imports ``sk_deploy.deploy.triton_python``) on the
  backend ``--runtime`` names (``auto``: what the serving machine runs best) at ``--precision``. The server's Python
  needs sk-deploy installed.

``--ensemble`` adds two models beside the model, for clients that send encoded pictures: ``<model>_preprocess``
(Python backend: BYTES in, one picture per batch item, decoded, resized, cropped and normalised by
``sk_deploy.images`` within the limits on pixels, aspect ratio and bytes) and ``<model>_ensemble`` (the two in a
row, with the classification extension's labels on its output).

The model directory is built in a staging directory beside its target and renamed into place, like a bundle.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import onnx

from sk_deploy.backends import BACKENDS
from sk_deploy.bundle import (
    MANIFEST,
    MODEL_FILE,
    Bundle,
    BundleError,
    MissingGraph,
    atomic_write_bytes,
    check_target,
    graph_form,
    staging,
)
from sk_deploy.deploy.triton_python import BUNDLE_DIR
from sk_deploy.engines.compat import find_engine
from sk_deploy.errors import SkDeployError
from sk_deploy.precisions import PRECISIONS, Precision
from sk_deploy.settings.base import choices, defaults
from sk_deploy.settings.deploy import KINDS, TritonSettings

#: Triton's backends a repository can name, each with the backend of sk-deploy's table that runs the same files
#: the same way (its precisions and graph forms are what Triton's backend serves); Triton's Python backend runs
#: the bundle through sk-deploy's own Predictor (``--runtime``), so it serves what that backend does
TRITON_RUNS_AS = {"onnxruntime": "ort-cpu", "tensorrt": "tensorrt", "openvino": "openvino"}
# Triton's OpenVINO backend has no platform string: it is named by `backend:` and loads the file that
# default_model_filename names. Its CPU parameters are INFERENCE_NUM_THREADS, NUM_STREAMS, PERFORMANCE_HINT and
# HINT_BF16; it has none that pins f32 (OpenVINO's own default is bf16 on a CPU with native bfloat16).
TRITON_BACKENDS = {"openvino": "openvino", "python": "python"}
#: The instance kind of each backend when none is given (Triton's OpenVINO backend runs on the CPU; a Python model's
#: instances are processes on the host, whatever device the Predictor in them uses); the others: gpu.
DEFAULT_KINDS = {"openvino": "cpu", "python": "cpu"}
OPENVINO_PARAMETERS = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1"}
#: the parameters of Triton's OpenVINO backend that ask for a precision set at compile time
OPENVINO_PRECISION_HINTS = {Precision.BF16: {"HINT_BF16": "YES"}}
PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}
MODEL_FILES = {"onnxruntime": "model.onnx", "tensorrt": "model.plan", "python": "model.py"}  # what Triton loads
LABELS_FILE = "labels.txt"
VERSION = "1"
INSTANCE_KINDS = {"gpu": "KIND_GPU", "cpu": "KIND_CPU"}
ORT_TRT_PRECISION = {"fp32": "FP32", "fp16": "FP16", "int8": "INT8"}
PREPROCESS_SUFFIX, ENSEMBLE_SUFFIX = "_preprocess", "_ensemble"
PICTURE_INPUT = "image"
"""The ensemble's input: encoded pictures, BYTES, one per batch item."""
PYTHON_MODELS = {"python": "ClassifierModel", "preprocess": "PictureModel"}
"""The class of ``sk_deploy.deploy.triton_python`` each Python model's ``model.py`` serves."""

# ONNX element type -> Triton data type (the ones a classifier's I/O can have)
TRITON_TYPES = {
    onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16",
    onnx.TensorProto.BFLOAT16: "TYPE_BF16", onnx.TensorProto.DOUBLE: "TYPE_FP64",
    onnx.TensorProto.UINT8: "TYPE_UINT8", onnx.TensorProto.INT8: "TYPE_INT8", onnx.TensorProto.INT32: "TYPE_INT32",
    onnx.TensorProto.INT64: "TYPE_INT64", onnx.TensorProto.BOOL: "TYPE_BOOL",
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class TritonRepoError(SkDeployError, RuntimeError):
    """A model repository that cannot be written as asked; the message is meant for a person."""


#: the command's defaults, from its settings model
TRITON = defaults(TritonSettings)


@dataclass(frozen=True)
class TritonRequest:
    """Everything ``sk-deploy triton-repo`` was asked to do."""

    bundle: Path
    out: Path
    backend: str = TRITON["backend"]
    precision: str = TRITON["precision"]
    instance_kind: str | None = None
    """gpu or cpu; None: cpu for openvino, gpu otherwise"""
    max_batch: int | None = None
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_ms: float = TRITON["max_queue_delay_ms"]
    instances: int = TRITON["instances"]
    name: str | None = None
    engine: str | None = None
    ort_tensorrt: bool = TRITON["ort_tensorrt"]
    force: bool = TRITON["force"]
    runtime: str = TRITON["runtime"]
    """with --backend python: the Predictor's backend (auto: what the serving machine runs best)"""
    ensemble: bool = TRITON["ensemble"]
    """also write <name>_preprocess and <name>_ensemble (encoded pictures in)"""
    max_pixels: int = TRITON["max_pixels"]
    max_aspect_ratio: float = TRITON["max_aspect_ratio"]
    max_picture_mb: float = TRITON["max_picture_mb"]


@dataclass(frozen=True)
class TensorConfig:
    """One input or output as Triton sees it: dims without the batch axis."""

    name: str
    data_type: str
    dims: tuple[int, ...]
    format: str | None = None  # FORMAT_NCHW / FORMAT_NHWC for image inputs


@dataclass
class TritonPlan:
    """A checked request: what goes where, and the configuration to write."""

    bundle: Bundle
    name: str
    platform: str
    source: str
    """the bundle file copied to ``1/model.onnx`` or ``1/model.plan``"""
    graph: str
    """the ONNX graph the I/O was read from (the engine's source for a plan)"""
    max_batch: int
    batch_limit: int
    input: TensorConfig
    output: TensorConfig
    labels: list[str]
    preferred_batch: tuple[int, ...]
    max_queue_delay_us: int
    instances: int
    kind: str
    accelerator: dict[str, str] | None = None
    warnings: list[str] = field(default_factory=list)
    triton_backend: str | None = None
    """``backend:`` for a backend with no platform string (openvino)"""
    parameters: dict[str, str] = field(default_factory=dict)
    ensemble: bool = False
    limits: dict[str, str] = field(default_factory=dict)
    """the picture limits of the ensemble's decoding step, as its config parameters"""

    @property
    def model_file(self) -> str:
        """``model.onnx``, ``model.plan`` or ``model.py``: the name Triton's backend loads from the version
        directory."""
        if self.triton_backend == "python":
            return MODEL_FILES["python"]
        return MODEL_FILES["tensorrt" if self.platform == PLATFORMS["tensorrt"] else "onnxruntime"]

    @property
    def names(self) -> list[str]:
        """The model directories written: the model, then the ensemble's two when asked for."""
        return [self.name, *([self.name + PREPROCESS_SUFFIX, self.name + ENSEMBLE_SUFFIX] if self.ensemble else [])]


def _check_options(request: TritonRequest) -> None:
    """The checks that need no file."""
    for value, allowed, what in ((request.backend, choices(TritonSettings.model_fields["backend"]) or (), "backend"),
                                 (request.instance_kind, KINDS, "instance kind"), (request.precision, PRECISIONS,
                                                                              "precision")):
        if value not in allowed:
            raise TritonRepoError(f"unknown {what} {value!r}; choose one of: {', '.join(allowed)}")
    if request.backend == "openvino" and request.instance_kind != "cpu":
        raise TritonRepoError("Triton's OpenVINO backend runs on the CPU: use --instance-kind cpu (the default for "
                              "openvino)")
    if request.backend != "python" and request.runtime != "auto":
        raise TritonRepoError("--runtime picks the backend sk-deploy's Predictor runs inside Triton's Python backend: "
                              "add --backend python")
    if request.runtime != "auto" and request.runtime not in BACKENDS:
        raise TritonRepoError(f"unknown runtime {request.runtime!r}; choose one of: auto, {', '.join(BACKENDS)}")
    runs_as = request.runtime if request.backend == "python" and request.runtime != "auto" else \
        TRITON_RUNS_AS.get(request.backend)
    serves = BACKENDS[runs_as].precisions if runs_as is not None else PRECISIONS
    if request.precision not in serves:
        others = [name for name, table_name in TRITON_RUNS_AS.items()
                  if request.precision in BACKENDS[table_name].precisions]
        if len(others) == 1 and request.backend != "python":
            raise TritonRepoError(f"{request.precision} is served by Triton's {others[0]} backend only "
                                  f"({Precision(request.precision).facts.about}): use --backend {others[0]} or python")
        raise TritonRepoError(f"the {runs_as} backend serves {', '.join(serves)}, not {request.precision}")
    if request.backend == "tensorrt" and request.instance_kind == "cpu":
        raise TritonRepoError("a TensorRT plan runs on a GPU only: use --instance-kind gpu, or --backend onnxruntime "
                              "for CPU")
    if request.ort_tensorrt and (request.backend != "onnxruntime" or request.instance_kind != "gpu"):
        raise TritonRepoError("--ort-tensorrt is ONNX Runtime's TensorRT provider: it needs --backend onnxruntime "
                              "--instance-kind gpu")
    if min(request.max_pixels, request.max_picture_mb) <= 0 or request.max_aspect_ratio < 1:
        raise TritonRepoError("--max-pixels and --max-picture-mb must be above 0, --max-aspect-ratio at least 1")
    if request.engine is not None and request.backend != "tensorrt":
        raise TritonRepoError("--engine picks a TensorRT plan: add --backend tensorrt")
    if request.instances < 1:
        raise TritonRepoError(f"--instances must be at least 1, got {request.instances}")
    if request.max_queue_delay_ms < 0:
        raise TritonRepoError(f"--max-queue-delay-ms must be 0 or more, got {request.max_queue_delay_ms:g}")
    if request.name is not None and not _NAME.match(request.name):
        raise TritonRepoError(f"model name {request.name!r}: use letters, digits, '_', '.' and '-' (it names a "
                              "directory and the model in Triton's URLs)")


def _engine(bundle: Bundle, request: TritonRequest) -> tuple[str, dict[str, Any]]:
    """The plan file to export and its manifest entry."""
    name = request.engine or find_engine(bundle, request.precision, None, None)
    if name is None:
        raise TritonRepoError(f"the bundle has no {request.precision} TensorRT engine; build one on the serving GPU "
                              f"with the TensorRT version of your Triton release: sk-deploy build BUNDLE --precision "
                              f"{request.precision} (or use --backend onnxruntime)")
    entry = bundle.entry(name) if bundle.has(name) else None
    if entry is None or entry.get("role") != "engine":
        engines = [n for n, role in bundle.roles.items() if role == "engine"]
        raise TritonRepoError(f"{name!r} is not an engine of the bundle (engines: {', '.join(engines) or 'none'})")
    if entry.get("precision") != request.precision:
        raise TritonRepoError(f"{name} is a {entry.get('precision')} engine; pass --precision {entry.get('precision')}")
    return name, entry


def _tensor(value: onnx.ValueInfoProto, where: str) -> tuple[str, tuple[int, ...], int | str | None]:
    """(Triton data type, dims without the batch axis, the batch dim) of a graph input or output."""
    elem = value.type.tensor_type.elem_type
    if elem not in TRITON_TYPES:
        raise TritonRepoError(f"{where}: {value.name!r} has ONNX element type {elem}, which Triton cannot serve here")
    dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in value.type.tensor_type.shape.dim]
    if not dims:
        raise TritonRepoError(f"{where}: {value.name!r} has no shape")
    return TRITON_TYPES[elem], tuple(d if isinstance(d, int) and d > 0 else -1 for d in dims[1:]), dims[0]


def _io(path: Path, bundle: Bundle) -> tuple[TensorConfig, TensorConfig]:
    """The graph's one input and one output, checked against the manifest."""
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends share no useful base
        raise BundleError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None
    graph = model.graph
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in graph.initializer):
        raise TritonRepoError(f"{path.name}: its weights live in external data files; Triton's repository here takes "
                              "one self-contained ONNX file")
    initializers = {t.name for t in graph.initializer}
    inputs = [v for v in graph.input if v.name not in initializers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise TritonRepoError(f"{path.name}: expected one input and one output, found {len(inputs)} and "
                              f"{len(graph.output)}")
    in_type, in_dims, in_batch = _tensor(inputs[0], path.name)
    out_type, out_dims, out_batch = _tensor(graph.output[0], path.name)
    fixed = [d for d in (in_batch, out_batch) if isinstance(d, int)]
    if fixed:
        raise TritonRepoError(f"{path.name}: the first axis is fixed ({fixed[0]}); Triton batching needs a dynamic "
                              "batch axis (export again without a fixed batch)")
    spec = bundle.input_spec
    if inputs[0].name != spec.name or graph.output[0].name != bundle.output_name:
        raise TritonRepoError(f"{path.name}: its input/output ({inputs[0].name}, {graph.output[0].name}) differ from "
                              f"the manifest's ({spec.name}, {bundle.output_name})")
    if in_dims != spec.item_shape:
        raise TritonRepoError(f"{path.name}: input dims {list(in_dims)} differ from the manifest's "
                              f"{list(spec.item_shape)}")
    layout = spec.layout
    image_format = f"FORMAT_{layout}" if len(in_dims) == 3 and layout in ("NCHW", "NHWC") else None
    return (TensorConfig(inputs[0].name, in_type, in_dims, image_format),
            TensorConfig(graph.output[0].name, out_type, out_dims))


def _labels(bundle: Bundle, classes: int) -> list[str]:
    """One label per class, in index order, for the output's label file."""
    source = bundle.labels_source
    if source != "imagenet-1k":
        raise TritonRepoError(f"the bundle's labels come from {source!r}; only imagenet-1k labels can be exported")
    from sk_deploy.labels import imagenet_labels

    labels = imagenet_labels()
    if len(labels) != classes:
        raise TritonRepoError(f"the output has {classes} classes but the labels list {len(labels)}")
    return labels


def _batching(request: TritonRequest, limit: int, limit_hint: str) -> tuple[int, tuple[int, ...]]:
    """max_batch_size and the preferred batch sizes, checked against the batch profile's maximum."""
    max_batch = limit if request.max_batch is None else request.max_batch
    if max_batch < 1:
        raise TritonRepoError(f"--max-batch must be at least 1, got {max_batch}")
    if max_batch > limit:
        raise TritonRepoError(f"--max-batch {max_batch} is above the batch profile's maximum {limit}; {limit_hint}")
    preferred = tuple(sorted(set(request.preferred_batch_sizes)))
    wrong = [size for size in preferred if not 1 <= size <= max_batch]
    if wrong:
        raise TritonRepoError(f"--preferred-batch-sizes {', '.join(map(str, wrong))}: each must be 1 to max batch "
                              f"{max_batch}")
    return max_batch, preferred


def _python_runs(bundle: Bundle, request: TritonRequest) -> None:
    """Refuse a Python-backend model whose Predictor would find nothing of the bundle to run (the serving machine
    decides the rest: ``auto`` takes what it runs best among the graphs and engines there are)."""
    precision, runtime = str(Precision(request.precision).graph), request.runtime
    if runtime == "auto":
        if bundle.engines(precision):
            return
        try:
            bundle.graph(precision, "cpu")
        except MissingGraph:
            bundle.graph(precision, "gpu")
        return
    spec = BACKENDS[runtime]
    if spec.runs == "engine" and not bundle.engines(precision):
        raise TritonRepoError(f"the bundle has no {precision} TensorRT engine for --runtime tensorrt; build one: "
                              f"sk-deploy build BUNDLE --precision {precision}")
    if spec.runs == "onnx":
        bundle.graph(precision, spec.device, prefer=spec.prefers)


def plan_repository(request: TritonRequest) -> TritonPlan:
    """Check everything and work out the configuration; writes nothing."""
    if request.instance_kind is None:
        request = replace(request, instance_kind=DEFAULT_KINDS.get(request.backend, "gpu"))
    _check_options(request)
    assert request.instance_kind is not None
    bundle = Bundle.open(request.bundle)
    warnings: list[str] = []
    if request.backend == "python":
        _python_runs(bundle, request)
        source = graph = MODEL_FILE  # every graph form keeps the fp32 graph's inputs and outputs
        limit = bundle.batch_profile[2]
        limit_hint = "export again with a larger profile: sk-deploy export MODEL --batch-profile 1:OPT:MAX"
    elif request.backend == "tensorrt":
        source, entry = _engine(bundle, request)
        graph = (entry.get("source") or {}).get("file")
        if not bundle.has(graph):
            raise TritonRepoError(f"{source}: its source graph {graph!r} is not in the bundle; cannot tell its I/O")
        limit = int(entry.get("profile", {}).get("max") or bundle.batch_profile[2])
        limit_hint = "rebuild the engine with a larger profile: sk-deploy build BUNDLE --batch-profile 1:OPT:MAX"
        trt, gpu = entry.get("tensorrt", {}), entry.get("gpu", {})
        compat = entry.get("hardware_compat", "none")
        runs_on = {"none": f"on {gpu.get('name')} only", "same-cc": "on GPUs of compute capability "
                   f"{'.'.join(map(str, gpu.get('compute_capability', [])))}",
                   "ampere+": "on Ampere and newer GPUs"}.get(compat, f"on {gpu.get('name')}")
        warnings.append(f"{source} was built with TensorRT {trt.get('version')} and runs {runs_on}: Triton loads it "
                        f"only if its container ships TensorRT {trt.get('version')} (pick the Triton release whose "
                        "TensorRT matches, or rebuild the engine inside that release's nvcr.io/nvidia/tensorrt "
                        "container on the serving GPU)")
    else:
        # the Predictor's choice too: OpenVINO takes the TensorRT INT8 form first
        prefer = BACKENDS[TRITON_RUNS_AS[request.backend]].prefers
        kind = request.instance_kind
        source = graph = bundle.graph(request.precision, kind, f" for a {kind.upper()} instance", prefer=prefer)
        limit = bundle.batch_profile[2]
        limit_hint = "export again with a larger profile: sk-deploy export MODEL --batch-profile 1:OPT:MAX"
        if request.backend == "openvino" and request.precision not in OPENVINO_PRECISION_HINTS:
            warnings.append("Triton's OpenVINO backend has no parameter pinning f32: on a CPU with native bfloat16 "
                            "OpenVINO computes this graph's float parts in bf16, as `sk-deploy serve --backend "
                            "openvino --precision bf16` does (measure it: sk-deploy quantize BUNDLE --precision bf16)")
        if request.instance_kind == "cpu" and request.precision == "fp16":
            warnings.append("ONNX Runtime's CPU provider has few float16 kernels and casts around the rest: a float16 "
                            "graph on KIND_CPU is usually slower than fp32")
        tensorrt_form = source == graph_form("int8", "tensorrt").file
        if request.instance_kind == "cpu" and tensorrt_form and request.backend != "openvino":
            warnings.append("model.int8.onnx is the TensorRT form (symmetric int8 Q/DQ), slow on ONNX Runtime's CPU "
                            "provider; make the CPU form: " + graph_form("int8", "cpu").make)
        if request.instance_kind == "gpu" and request.precision == "int8" and not request.ort_tensorrt:
            warnings.append("ONNX Runtime's CUDA provider runs the int8 Q/DQ graph without int8 kernels (slower than "
                            "fp32); add --ort-tensorrt or use --backend tensorrt for int8 speed")
    bundle.check_file(source)
    if graph != source:
        bundle.check_file(graph)
    model_input, model_output = _io(bundle.path / graph, bundle)
    max_batch, preferred = _batching(request, limit, limit_hint)
    accelerator = None
    if request.ort_tensorrt:
        accelerator = {"precision_mode": ORT_TRT_PRECISION[request.precision],
                       "max_workspace_size_bytes": str(4 << 30)}
    parameters = {}
    if request.backend == "openvino":
        parameters = {**OPENVINO_PARAMETERS, **OPENVINO_PRECISION_HINTS.get(Precision(request.precision), {})}
    if request.backend == "python":
        parameters = {"runtime": request.runtime, "precision": request.precision}
    limits = {"max_pixels": str(request.max_pixels), "max_aspect": f"{request.max_aspect_ratio:g}",
              "max_bytes": str(round(request.max_picture_mb * 2**20))}
    return TritonPlan(
        bundle=bundle, name=request.name or bundle.model_name, source=source,
        platform=PLATFORMS.get(request.backend, ""), triton_backend=TRITON_BACKENDS.get(request.backend),
        parameters=parameters,
        graph=graph, max_batch=max_batch, batch_limit=limit, input=model_input, output=model_output,
        labels=_labels(bundle, model_output.dims[-1]), preferred_batch=preferred,
        max_queue_delay_us=round(request.max_queue_delay_ms * 1000), instances=request.instances,
        kind=INSTANCE_KINDS[request.instance_kind], accelerator=accelerator, warnings=warnings,
        ensemble=request.ensemble, limits=limits,
    )


def _dims(dims: tuple[int, ...]) -> str:
    return f"[ {', '.join(map(str, dims))} ]"


def _quote(text: str) -> str:
    """A protobuf text-format string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _tensor_block(kind: str, tensor: TensorConfig, labels: bool = False) -> list[str]:
    """An ``input [ ... ]`` or ``output [ ... ]`` block of one tensor."""
    return [
        f"{kind} [",
        "  {",
        f'    name: "{tensor.name}"',
        f"    data_type: {tensor.data_type}",
        *([f"    format: {tensor.format}"] if tensor.format else []),
        f"    dims: {_dims(tensor.dims)}",
        *([f'    label_filename: "{LABELS_FILE}"'] if labels else []),
        "  }",
        "]",
    ]


def _batching_lines(plan: TritonPlan, preferred: bool = True) -> list[str]:
    return [
        "dynamic_batching {",
        *([f"  preferred_batch_size: {_dims(plan.preferred_batch)}"] if preferred and plan.preferred_batch else []),
        f"  max_queue_delay_microseconds: {plan.max_queue_delay_us}",
        "}",
    ]


def _instances(count: int, kind: str) -> list[str]:
    return ["instance_group [", "  {", f"    count: {count}", f"    kind: {kind}", "  }", "]"]


def _parameters(parameters: dict[str, str]) -> list[str]:
    return [f"parameters {{ key: {_quote(key)} value {{ string_value: {_quote(value)} }} }}"
            for key, value in parameters.items()]


def render_config(plan: TritonPlan) -> str:
    """The ``config.pbtxt`` text (protobuf text format of Triton's ModelConfig) for ``plan``."""
    if plan.triton_backend == "python":
        manifest_sha = plan.bundle.entry(MODEL_FILE)["sha256"]
        header = (f"# Written by sk-deploy triton-repo from {plan.bundle.path.name} ({MODEL_FILE} sha256 "
                  f"{manifest_sha[:16]}...), copied to {VERSION}/{BUNDLE_DIR} and run by sk-deploy's Predictor.")
    else:
        sha = plan.bundle.entry(plan.source)["sha256"]
        header = (f"# Written by sk-deploy triton-repo from {plan.bundle.path.name}/{plan.source} (sha256 "
                  f"{sha[:16]}...).")
    lines = [
        header,
        f'name: "{plan.name}"',
        *([f'backend: "{plan.triton_backend}"', f'default_model_filename: "{plan.model_file}"']
          if plan.triton_backend else [f'platform: "{plan.platform}"']),
        f"max_batch_size: {plan.max_batch}",
        *_tensor_block("input", plan.input),
        *_tensor_block("output", plan.output, labels=True),
        *_batching_lines(plan),
        *_instances(plan.instances, plan.kind),
        *_parameters(plan.parameters),
    ]
    if plan.accelerator:
        lines += [
            "optimization {",
            "  execution_accelerators {",
            "    gpu_execution_accelerator: [",
            "      {",
            '        name: "tensorrt"',
            *[f'        parameters {{ key: "{key}" value: "{value}" }}' for key, value in plan.accelerator.items()],
            "      }",
            "    ]",
            "  }",
            "}",
        ]
    return "\n".join(lines) + "\n"


def _picture_input() -> TensorConfig:
    return TensorConfig(PICTURE_INPUT, "TYPE_STRING", (1,))


def render_preprocess_config(plan: TritonPlan) -> str:
    """``<model>_preprocess``: encoded pictures -> the model's input, on the CPU, within the picture limits."""
    preprocess = plan.bundle.preprocess
    parameters = {"preprocess": json.dumps({key: value for key, value in preprocess.to_dict().items()
                                            if key != "layout"}, separators=(",", ":")),
                  "uint8_nhwc": "true" if plan.input.data_type == "TYPE_UINT8" else "false", **plan.limits}
    lines = [
        f"# Written by sk-deploy triton-repo: the pictures of {plan.name}_ensemble decoded, resized, cropped and "
        "normalised as the bundle says (sk_deploy.images).",
        f'name: "{plan.name}{PREPROCESS_SUFFIX}"',
        'backend: "python"',
        f"max_batch_size: {plan.max_batch}",
        *_tensor_block("input", _picture_input()),
        *_tensor_block("output", replace(plan.input, format=None)),
        *_batching_lines(plan, preferred=False),
        *_instances(plan.instances, INSTANCE_KINDS["cpu"]),
        *_parameters(parameters),
    ]
    return "\n".join(lines) + "\n"


def render_ensemble_config(plan: TritonPlan) -> str:
    """``<model>_ensemble``: encoded pictures in, the model's logits out (with the classification extension)."""
    step = "    {{\n      model_name: \"{model}\"\n      model_version: -1\n      input_map {{ key: \"{key_in}\" " \
           "value: \"{value_in}\" }}\n      output_map {{ key: \"{key_out}\" value: \"{value_out}\" }}\n    }}"
    middle = f"{plan.input.name}_preprocessed"
    lines = [
        f"# Written by sk-deploy triton-repo: encoded pictures -> {plan.name}{PREPROCESS_SUFFIX} -> {plan.name}.",
        f'name: "{plan.name}{ENSEMBLE_SUFFIX}"',
        'platform: "ensemble"',
        f"max_batch_size: {plan.max_batch}",
        *_tensor_block("input", _picture_input()),
        *_tensor_block("output", plan.output, labels=True),
        "ensemble_scheduling {",
        "  step [",
        step.format(model=plan.name + PREPROCESS_SUFFIX, key_in=PICTURE_INPUT, value_in=PICTURE_INPUT,
                    key_out=plan.input.name, value_out=middle) + ",",
        step.format(model=plan.name, key_in=plan.input.name, value_in=middle, key_out=plan.output.name,
                    value_out=plan.output.name),
        "  ]",
        "}",
    ]
    return "\n".join(lines) + "\n"


def python_model_file(role: str) -> str:
    """The ``model.py`` of a Python model: the class of ``sk_deploy.deploy.triton_python`` that serves ``role``."""
    return "\n".join([
        f'"""Written by sk-deploy triton-repo: Triton\'s Python backend serves {PYTHON_MODELS[role]} of',
        "sk_deploy.deploy.triton_python. The Python that Triton's Python stub embeds (the python3 first on the",
        "server's PATH) needs sk-deploy installed, and numpy<2 with Triton 24.10 and older, whose stub is built for",
        'numpy 1."""',
        "",
        f"from sk_deploy.deploy.triton_python import {PYTHON_MODELS[role]} as TritonPythonModel  # noqa: F401",
        "",
    ])


@dataclass
class TritonResult:
    """The model directories written and the plan they followed."""

    path: Path
    plan: TritonPlan
    ensemble: list[Path] = field(default_factory=list)
    """``<model>_preprocess`` and ``<model>_ensemble`` when asked for"""


def _copy_bundle(bundle: Bundle, target: Path) -> None:
    """The manifest and every file it records (the Predictor checks their sha256 when it opens them)."""
    target.mkdir()
    for name in [*bundle.files, MANIFEST]:
        shutil.copyfile(bundle.path / name, target / name)


def _write_model(plan: TritonPlan, stage: Path, progress: Callable[[str], None]) -> None:
    (stage / VERSION).mkdir()
    if plan.triton_backend == "python":
        progress(f"copying the bundle to {VERSION}/{BUNDLE_DIR}")
        _copy_bundle(plan.bundle, stage / VERSION / BUNDLE_DIR)
        atomic_write_bytes(stage / VERSION / plan.model_file, python_model_file("python").encode("utf-8"))
    else:
        progress(f"copying {plan.source}")
        shutil.copyfile(plan.bundle.path / plan.source, stage / VERSION / plan.model_file)
    atomic_write_bytes(stage / LABELS_FILE, ("\n".join(plan.labels) + "\n").encode("utf-8"))
    atomic_write_bytes(stage / "config.pbtxt", render_config(plan).encode("utf-8"))


def _write_preprocess(plan: TritonPlan, stage: Path, progress: Callable[[str], None]) -> None:
    (stage / VERSION).mkdir()
    atomic_write_bytes(stage / VERSION / MODEL_FILES["python"], python_model_file("preprocess").encode("utf-8"))
    atomic_write_bytes(stage / "config.pbtxt", render_preprocess_config(plan).encode("utf-8"))


def _write_ensemble(plan: TritonPlan, stage: Path, progress: Callable[[str], None]) -> None:
    (stage / VERSION).mkdir()  # Triton wants a version directory for an ensemble too, empty
    atomic_write_bytes(stage / LABELS_FILE, ("\n".join(plan.labels) + "\n").encode("utf-8"))
    atomic_write_bytes(stage / "config.pbtxt", render_ensemble_config(plan).encode("utf-8"))


def write_repository(request: TritonRequest, progress: Callable[[str], None] = lambda message: None) -> TritonResult:
    """Write ``<out>/<model>/`` (config.pbtxt, labels.txt, 1/model.onnx, 1/model.plan or 1/model.py and
    1/bundle) and, with ``ensemble``, ``<out>/<model>_preprocess/`` and ``<out>/<model>_ensemble/``, each
    atomically.

    ``out`` may hold other models; each model's own directory must be absent or empty unless ``force``, which
    replaces it only once the new one is complete. All are checked before any is written.
    """
    plan = plan_repository(request)
    out = Path(request.out)
    if out.exists() and not out.is_dir():
        raise TritonRepoError(f"{request.out}: exists and is not a directory")
    writers = [_write_model, _write_preprocess, _write_ensemble][:len(plan.names)]
    for name in plan.names:
        check_target(out / name, request.force)
    try:
        for name, write in zip(plan.names, writers, strict=True):
            with staging(out / name, request.force) as stage:
                write(plan, stage, progress)
    except OSError as exc:
        raise TritonRepoError(f"{out}: cannot write the model repository ({exc.strerror or exc})") from None
    target = out / plan.name
    return TritonResult(target.resolve(), plan, [(out / name).resolve() for name in plan.names[1:]])
