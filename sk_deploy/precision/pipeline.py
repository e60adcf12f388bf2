"""``sk-deploy quantize``: a bundle's float32 graph -> its FP16 or INT8 graph, calibrated and gated; or the
bf16 gate, which needs no file (OpenVINO compiles the float32 graph in bf16 on a CPU with native bfloat16).

Order: check the bundle, the options and the image folder (before any heavy work); build the precision graph
into a temporary file in the bundle; measure it against the float32 graph on held-out pictures; if it passes
its gate, rename it into place and record file and figures in the manifest. On any error or a failed gate the
bundle is left as it was. bf16 measures the float32 graph run in bf16 the same way and records only figures.

ONNX Runtime's CPU provider (the reference runtime) decides whether the file is written; a written graph is then
judged the same way on every other CPU backend that serves it here (``precision.backends.gate_on_backends``), and
each backend's figures, under ``backends``, license ``--precision auto`` to serve it there.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from sk_deploy.backends import BACKENDS, REFERENCE, BackendSpec, runners_of
from sk_deploy.bundle import MODEL_FILE, Bundle, BundleError, graph_form, is_trained
from sk_deploy.compare import generated_images
from sk_deploy.machine import probe_machine
from sk_deploy.precision.accuracy import AccuracyReport, judge
from sk_deploy.precision.backends import gate_on_backends
from sk_deploy.precision.calibration import ImageBatches, list_images, split_images
from sk_deploy.precision.fp16 import PrecisionError, convert_fp16, resolve_exclusions
from sk_deploy.precision.int8 import METHODS, TARGETS, quantize_int8
from sk_deploy.precision.mixed import check_high_precision, to_mixed
from sk_deploy.precision.sensitivity import search_exclusions
from sk_deploy.precisions import Precision, precision_names
from sk_deploy.runners import ort_logits
from sk_deploy.settings.precision import QuantizeSettings

SOURCE_FILE = MODEL_FILE
#: what quantize makes: the gated precisions (a hint such as bf16 is recorded under its name, with no file)
GATED = precision_names(gated=True)


#: pictures per calibration and held-out batch
CALIBRATION_BATCH = 8


def resolve_target(request: QuantizeSettings) -> QuantizeSettings:
    """``--target auto``: ``tensorrt`` for fp16 and bf16 (their one form); for int8 the form for where the bundle
    will run, taken as this machine: ``tensorrt`` with a CUDA GPU here, else ``cpu``."""
    if request.target != "auto":
        return request
    target = "tensorrt"
    if request.precision == "int8":
        target = "tensorrt" if probe_machine().cuda else "cpu"
    return request.model_copy(update={"target": target})


def high_precision(request: QuantizeSettings) -> str:
    """The type of an INT8 graph's non-quantized part: ``--high-precision``, else fp16 for TensorRT, fp32 for the
    CPU."""
    return request.high_precision or ("fp16" if request.target == "tensorrt" else "fp32")


@dataclass
class QuantizeResult:
    """The file written (or not) and its figures."""

    file: str
    written: bool
    accuracy: AccuracyReport
    details: dict[str, Any] = field(default_factory=dict)


def output_name(precision: str, target: str) -> str:
    """``model.fp16.onnx``, ``model.int8.onnx`` (TensorRT form) or ``model.int8-cpu.onnx``."""
    return graph_form(precision, target).file


def check_request(request: QuantizeSettings) -> tuple[Bundle, list[Path]]:
    """Every check that needs no heavy work; returns the bundle and the listed calibration pictures."""
    if request.precision not in GATED:
        raise PrecisionError(f"unknown precision {request.precision!r}; choose one of: {', '.join(GATED)}")
    if request.target not in TARGETS:
        raise PrecisionError(f"unknown target {request.target!r}; choose one of: {', '.join(TARGETS)}")
    if request.method not in METHODS:
        raise PrecisionError(f"unknown calibration method {request.method!r}; choose one of: {', '.join(METHODS)}")
    check_high_precision(request.precision, request.target, request.high_precision)
    if request.auto_exclude and request.precision != "int8":
        raise PrecisionError("--auto-exclude searches the quantized layers of an int8 graph; for fp16 name the "
                             "layers to keep float32 with --exclude")
    if request.calib_size < 1 or request.holdout_size < 1:
        raise PrecisionError("--calib-size and --holdout-size must be at least 1")
    bundle = Bundle.open(request.bundle)
    if SOURCE_FILE not in bundle.files:
        raise BundleError(f"{bundle.path}: bundle has no {SOURCE_FILE}; run `sk-deploy export` first")
    bundle.check_file(SOURCE_FILE)
    if Precision(request.precision).hint:
        _check_hint(request)
    if request.precision == "int8" and request.images is None:
        raise PrecisionError("int8 needs calibration pictures: pass --images DIR (a folder of JPEG/PNG photos)")
    files = list_images(request.images) if request.images is not None else []
    if len(files) == 1:
        raise PrecisionError(f"{request.images}: one picture; calibration and the held-out accuracy check need two "
                             "different ones at least")
    return bundle, files


def quantize_bundle(
    request: QuantizeSettings, progress: Callable[[str, int], None] = lambda message, total: None,
    advance: Callable[[int], None] = lambda n: None,
) -> QuantizeResult:
    """Make the precision graph ``request`` asks for and record it in the bundle if it passes its gate.

    ``progress(message, total)`` announces a step of ``total`` pictures (0: no count); ``advance(n)`` moves it.
    """
    request = resolve_target(request)
    bundle, files = check_request(request)
    source = bundle.file(SOURCE_FILE)
    model = onnx.load(source)
    resolve_exclusions(model, request.exclude)  # an unknown name fails here, before calibration
    name = output_name(request.precision, request.target)
    spec = bundle.preprocess
    input_name = model.graph.input[0].name
    uint8 = model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    trained = is_trained(bundle.weights)
    key = "int8-cpu" if name == graph_form("int8", "cpu").file else request.precision
    calibration, holdout = _split(request, files)
    if Precision(request.precision).hint:
        return _gate_hint(request, bundle, holdout, trained, (input_name, spec, uint8), progress, advance)

    # Work in a hidden folder inside the bundle, so the finished file is renamed (never copied) into place.
    with tempfile.TemporaryDirectory(prefix=".quantize-", dir=bundle.path) as tmp:
        out = Path(tmp) / name
        details: dict[str, Any] = {"source": SOURCE_FILE}
        if request.precision == "fp16":
            progress("converting to float16", 0)
            converted, fp16 = convert_fp16(model, request.exclude)
            onnx.save_model(converted, out)
            details["fp16"] = asdict(fp16)
        else:
            progress(f"calibrating on {len(calibration)} pictures ({request.method})", len(calibration))
            reader = ImageBatches(calibration, input_name, spec, CALIBRATION_BATCH, uint8, on_batch=advance)
            qdq_path = Path(tmp) / "qdq.onnx"
            int8 = quantize_int8(model, qdq_path, reader, request.target, request.method, request.exclude)
            details["int8"] = asdict(int8)
            mixed, mixed_report = to_mixed(onnx.load(qdq_path), high_precision(request), request.exclude)
            onnx.save_model(mixed, out)
            details["high_precision"] = asdict(mixed_report)
            details["calibration"] = {"folder": str(request.images), "images": int8.calibration_images,
                                      "skipped": len(int8.skipped_images)}
        inputs, reference = _holdout_reference(request, source, holdout, (input_name, spec, uint8), progress, advance)
        accuracy = judge(name, key, reference, ort_logits(out, lambda dtype: inputs), trained)
        if request.auto_exclude and not accuracy.passed:
            progress("searching for the layers to keep float (--auto-exclude)", 0)
            accuracy, details["auto_exclude"] = search_exclusions(
                onnx.load(qdq_path), model, inputs, out, lambda graph: judge(name, key, reference, graph, trained),
                high_precision(request), request.exclude, accuracy,
            )
        details["holdout"] = _holdout_details(request, inputs)
        result = QuantizeResult(name, written=accuracy.passed or not request.gate, accuracy=accuracy, details=details)
        if not result.written:
            return result  # the gate failed: the bundle stays as it was
        progress("judging it on every CPU backend that serves it here", 0)
        details["backends"] = gate_on_backends(out, key, inputs, reference, trained, probe_machine(),
                                               {REFERENCE: accuracy}, CALIBRATION_BATCH)
        os.replace(out, bundle.path / name)
    bundle.add_file(name, role=key, source=SOURCE_FILE, nodes=len(onnx.load(bundle.path / name).graph.node))
    bundle.record("precision", {**details, "accuracy": accuracy.to_dict()}, key=name)
    bundle.save()
    if accuracy.passed:  # only a passed gate licenses auto to serve it: nothing to time otherwise
        _record_speed(request, bundle, name, progress)
    return result


def _hint_backend(precision: Precision) -> BackendSpec:
    """The backend of the table that compiles a hint precision from the float32 graph (bf16: OpenVINO)."""
    return BACKENDS[runners_of(precision, precision.device)[0]]


def _record_speed(request: QuantizeSettings, bundle: Bundle, key: str, progress: Callable[[str, int], None]) -> None:
    """The gated precision's speed-up over fp32 on this machine, on each CPU backend where its gate passed (on a
    GPU machine: where ``--precision auto`` serves it), recorded under ``stages.precision[key].speed``
    (``runtime.precision_speed``); a precision that cannot run here (no such backend) records why instead."""
    if not request.measure_speed:
        return
    from sk_deploy.machine import BackendUnavailable
    from sk_deploy.runtime.precision_speed import measure_speedup

    progress(f"timing {request.precision} against fp32 on this machine", 0)
    try:
        speed = measure_speedup(bundle, request.precision, key)
    except BackendUnavailable as exc:
        speed = {"error": str(exc)}
    bundle.stage("precision")[key]["speed"] = speed
    bundle.save()


def gate_bf16_where_native(bundle: Path, images: Path | None = None,
                           progress: Callable[[str, int], None] = lambda message, total: None) -> QuantizeResult | str:
    """After ``export``: the bf16 gate of the fresh bundle where this CPU computes bfloat16 natively and OpenVINO
    is installed (on ``images`` when given, else on generated pictures, as export verifies), so that ``--precision
    auto`` serves bf16 from the start; elsewhere the one line saying why it was not measured."""
    request = QuantizeSettings(bundle=bundle, precision="bf16", images=images)
    try:
        _check_hint(request)
    except PrecisionError as exc:
        return f"the bf16 gate was not measured: {exc}"
    return quantize_bundle(request, progress)


def _check_hint(request: QuantizeSettings) -> None:
    """The refusals of a hint precision (bf16) that need no file: its backend missing, a CPU without the native
    support it needs, --exclude."""
    asked = Precision(request.precision)
    if request.exclude:
        raise PrecisionError(f"--exclude keeps nodes float32 in an fp16 or int8 graph; {asked} has no graph of its "
                             "own")
    spec, machine = _hint_backend(asked), probe_machine()
    missing = spec.machine_refusal(machine)
    if missing:
        raise PrecisionError(f"{asked} is measured on {spec.name}: {missing}")
    refusal = asked.cpu_refusal(machine.cpu) if asked.device == "cpu" else None
    if refusal:
        raise PrecisionError(refusal)


def _split(request: QuantizeSettings, files: list[Path]) -> tuple[list[Path], list[Any]]:
    """Calibration and held-out pictures: a fixed-seed split of the folder, or generated pictures without one."""
    if files:
        split = split_images(files, min(request.calib_size, max(1, len(files) - 1)), request.holdout_size)
        return split.calibration, split.holdout
    return [], generated_images(min(request.holdout_size, 16))


def _holdout_reference(request: QuantizeSettings, source: Path, holdout: list[Any], form: tuple[str, Any, bool],
                       progress: Callable[[str, int], None], advance: Callable[[int], None]
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The held-out pictures as the graph's input, and the float32 graph's logits of them (ONNX Runtime)."""
    input_name, spec, uint8 = form
    progress(f"measuring against float32 on {len(holdout)} held-out pictures", len(holdout))
    pictures = ImageBatches(holdout, input_name, spec, CALIBRATION_BATCH, uint8, on_batch=advance)
    inputs = np.concatenate(list(pictures.arrays()))
    return inputs, ort_logits(source, lambda dtype: inputs)


def _holdout_details(request: QuantizeSettings, inputs: np.ndarray) -> dict[str, Any]:
    source = str(request.images) if request.images is not None else "generated pictures"
    return {"images": len(inputs), "source": source}


def _gate_hint(request: QuantizeSettings, bundle: Bundle, holdout: list[Any], trained: bool,
               form: tuple[str, Any, bool], progress: Callable[[str, int], None],
               advance: Callable[[int], None]) -> QuantizeResult:
    """A hint precision against float32 on the held-out pictures: the float32 graph compiled in it by its backend
    (bf16: OpenVINO, refused in one line on a CPU without native bfloat16); figures go to
    ``stages.precision.<precision>`` if the gate passes."""
    from sk_deploy.machine import BackendUnavailable, detect_cpu

    asked = Precision(request.precision)
    spec = _hint_backend(asked)
    options = spec.default_options(asked)
    if hasattr(options, "cache_dir"):  # a one-off compile: no entry in the backend's compiled-model cache
        options = dataclasses.replace(options, cache_dir="")
    source = bundle.file(SOURCE_FILE)
    try:
        backend = spec.open(source, bundle, asked, options)
    except BackendUnavailable as exc:
        raise PrecisionError(str(exc)) from None
    with backend:
        inputs, reference = _holdout_reference(request, source, holdout, form, progress, advance)
        step = CALIBRATION_BATCH
        output = np.concatenate([backend.run(inputs[i:i + step]) for i in range(0, len(inputs), step)])
        details: dict[str, Any] = {"source": SOURCE_FILE, "file": None, str(asked): {
            "runtime": getattr(backend, "description", spec.name), "compiled_precision": backend.compiled_precision,
            "cpu": detect_cpu().describe()}, "holdout": _holdout_details(request, inputs)}
    accuracy = judge(f"{SOURCE_FILE} in {asked}", str(asked), reference, output, trained)
    details["backends"] = {spec.name: {"accuracy": accuracy.to_dict()}}  # the one backend that runs it
    result = QuantizeResult(SOURCE_FILE, written=accuracy.passed or not request.gate, accuracy=accuracy,
                            details=details)
    if result.written:
        bundle.record("precision", {**details, "accuracy": accuracy.to_dict()}, key=str(asked))
        bundle.save()
        if accuracy.passed:
            _record_speed(request, bundle, str(asked), progress)
    return result
