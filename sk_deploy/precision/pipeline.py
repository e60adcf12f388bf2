"""``sk-deploy quantize``: a bundle's float32 graph -> its FP16 or INT8 graph, calibrated and gated; or the
bf16 gate, which needs no file (OpenVINO compiles the float32 graph in bf16 on a CPU with native bfloat16).

Order: check the bundle, the options and the image folder (before any heavy work); build the precision graph
into a temporary file in the bundle; measure it against the float32 graph on held-out pictures; if it passes
its gate, rename it into place and record file and figures in the manifest. On any error or a failed gate the
bundle is left as it was. bf16 measures the float32 graph run in bf16 the same way and records only figures.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from sk_deploy.bundle import MODEL_FILE, Bundle, BundleError, graph_form
from sk_deploy.compare import generated_images, ort_logits
from sk_deploy.models.reference import is_trained
from sk_deploy.precision.accuracy import AccuracyReport, judge
from sk_deploy.precision.calibration import ImageBatches, list_images, split_images
from sk_deploy.precision.fp16 import PrecisionError, convert_fp16, resolve_exclusions
from sk_deploy.precision.int8 import METHODS, TARGETS, quantize_int8
from sk_deploy.precision.mixed import check_high_precision, to_mixed
from sk_deploy.precision.sensitivity import search_exclusions

SOURCE_FILE = MODEL_FILE
PRECISIONS = ("fp16", "int8", "bf16")
BF16_KEY = "bf16"  # stages.precision entry of the bf16 gate (no file of its own)


@dataclass(frozen=True)
class QuantizeRequest:
    """Everything ``sk-deploy quantize`` was asked to do."""

    bundle: Path
    precision: str
    target: str = "tensorrt"
    calib: Path | None = None
    calib_size: int = 256
    holdout_size: int = 64
    method: str = "minmax"
    exclude: tuple[str, ...] = ()
    gate: bool = True
    batch_size: int = 8
    high_precision: str | None = None
    """int8: the type of what is not quantized (fp16 or fp32); None: fp16 for TensorRT, fp32 for the CPU."""
    auto_exclude: bool = False
    """Keep the fewest most sensitive layers float until the gate passes (``sensitivity.auto_exclude``)."""
    measure_speed: bool = True
    """Once the gate passes, time the precision against fp32 as ``--precision auto`` would serve each, on this
    machine, and record it (``runtime.precision_speed``): the speed-up ``auto`` says, or why it passes it over."""

    @property
    def high(self) -> str:
        """The resolved high precision of an INT8 graph."""
        return self.high_precision or ("fp16" if self.target == "tensorrt" else "fp32")


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


def check_request(request: QuantizeRequest) -> tuple[Bundle, list[Path]]:
    """Every check that needs no heavy work; returns the bundle and the listed calibration pictures."""
    if request.precision not in PRECISIONS:
        raise PrecisionError(f"unknown precision {request.precision!r}; choose one of: {', '.join(PRECISIONS)}")
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
    if request.precision == "bf16":
        _check_bf16(request)
    if request.precision == "int8" and request.calib is None:
        raise PrecisionError("int8 needs calibration pictures: pass --images DIR (a folder of JPEG/PNG photos)")
    files = list_images(request.calib) if request.calib is not None else []
    if len(files) == 1:
        raise PrecisionError(f"{request.calib}: one picture; calibration and the held-out accuracy check need two "
                             "different ones at least")
    return bundle, files


def quantize_bundle(
    request: QuantizeRequest, progress: Callable[[str, int], None] = lambda message, total: None,
    advance: Callable[[int], None] = lambda n: None,
) -> QuantizeResult:
    """Make the precision graph ``request`` asks for and record it in the bundle if it passes its gate.

    ``progress(message, total)`` announces a step of ``total`` pictures (0: no count); ``advance(n)`` moves it.
    """
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
    if request.precision == "bf16":
        return _gate_bf16(request, bundle, holdout, trained, (input_name, spec, uint8), progress, advance)

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
            reader = ImageBatches(calibration, input_name, spec, request.batch_size, uint8, on_batch=advance)
            qdq_path = Path(tmp) / "qdq.onnx"
            int8 = quantize_int8(model, qdq_path, reader, request.target, request.method, request.exclude)
            details["int8"] = asdict(int8)
            mixed, mixed_report = to_mixed(onnx.load(qdq_path), request.high, request.exclude)
            onnx.save_model(mixed, out)
            details["high_precision"] = asdict(mixed_report)
            details["calibration"] = {"folder": str(request.calib), "images": int8.calibration_images,
                                      "skipped": len(int8.skipped_images)}
        inputs, reference = _holdout_reference(request, source, holdout, (input_name, spec, uint8), progress, advance)
        accuracy = judge(name, key, reference, ort_logits(out, lambda dtype: inputs), trained)
        if request.auto_exclude and not accuracy.passed:
            progress("searching for the layers to keep float (--auto-exclude)", 0)
            accuracy, details["auto_exclude"] = search_exclusions(
                onnx.load(qdq_path), model, inputs, out, lambda graph: judge(name, key, reference, graph, trained),
                request.high, request.exclude, accuracy,
            )
        details["holdout"] = _holdout_details(request, inputs)
        if request.precision == "int8" and accuracy.passed:
            details.update(_gate_openvino_bf16(out, name, key, inputs, reference, trained, request.batch_size))
        result = QuantizeResult(name, written=accuracy.passed or not request.gate, accuracy=accuracy, details=details)
        if not result.written:
            return result  # the gate failed: the bundle stays as it was
        os.replace(out, bundle.path / name)
    bundle.add_file(name, role=key, source=SOURCE_FILE, nodes=len(onnx.load(bundle.path / name).graph.node))
    bundle.record("precision", {**details, "accuracy": accuracy.to_dict()}, key=name)
    bundle.save()
    if accuracy.passed:  # only a passed gate licenses auto to serve it: nothing to time otherwise
        _record_speed(request, bundle, name, progress)
    return result


def _gate_openvino_bf16(graph: Path, name: str, key: str, inputs: np.ndarray, reference: np.ndarray, trained: bool,
                        batch: int) -> dict[str, Any]:
    """On a CPU with native bfloat16 and OpenVINO: the int8 graph with its float parts in bf16 (what OpenVINO then
    serves it as, ``runtime.openvino_backend.int8_float_parts``) judged by the int8 gate against float32; its
    figures under ``openvino_bf16``. Nothing where the CPU or OpenVINO cannot run it."""
    from sk_deploy.machine import BackendUnavailable
    from sk_deploy.runtime.cpu_features import detect_cpu
    from sk_deploy.runtime.openvino_backend import OpenVinoBackend, OpenVinoOptions

    if not detect_cpu().native_bf16:
        return {}
    try:
        backend = OpenVinoBackend(graph, None, precision="int8", options=OpenVinoOptions(cache_dir="",
                                                                                        int8_float="bf16"))
    except BackendUnavailable:
        return {}
    with backend:
        output = np.concatenate([backend.run(inputs[i:i + batch]) for i in range(0, len(inputs), batch)])
    return {"openvino_bf16": judge(f"{name} with bf16 float parts", key, reference, output, trained).to_dict()}


def _record_speed(request: QuantizeRequest, bundle: Bundle, key: str, progress: Callable[[str, int], None]) -> None:
    """The gated precision's speed-up over fp32 on this machine, as ``--precision auto`` would serve each,
    recorded under ``stages.precision[key].speed`` (``runtime.precision_speed``); a precision that cannot run
    here (no such backend) records why instead."""
    if not request.measure_speed:
        return
    from sk_deploy.machine import BackendUnavailable
    from sk_deploy.runtime.precision_speed import measure_speedup

    progress(f"timing {request.precision} against fp32 on this machine", 0)
    try:
        speed = measure_speedup(bundle, request.precision, file=None if key == BF16_KEY else key)
    except BackendUnavailable as exc:
        speed = {"error": str(exc)}
    bundle.stage("precision")[key]["speed"] = speed
    bundle.save()


def gate_bf16_where_native(bundle: Path, images: Path | None = None,
                           progress: Callable[[str, int], None] = lambda message, total: None) -> QuantizeResult | str:
    """After ``export``: the bf16 gate of the fresh bundle where this CPU computes bfloat16 natively and OpenVINO
    is installed (on ``images`` when given, else on generated pictures, as export verifies), so that ``--precision
    auto`` serves bf16 from the start; elsewhere the one line saying why it was not measured."""
    request = QuantizeRequest(bundle=bundle, precision="bf16", calib=images)
    try:
        _check_bf16(request)
    except PrecisionError as exc:
        return f"the bf16 gate was not measured: {exc}"
    return quantize_bundle(request, progress)


def _check_bf16(request: QuantizeRequest) -> None:
    """The bf16 refusals that need no file: OpenVINO missing, a CPU without native bfloat16, --exclude."""
    from sk_deploy.machine import BackendUnavailable, import_openvino
    from sk_deploy.runtime.cpu_features import bf16_refusal, detect_cpu

    if request.exclude:
        raise PrecisionError("--exclude keeps nodes float32 in an fp16 or int8 graph; bf16 has no graph of its own")
    try:
        import_openvino()
    except BackendUnavailable as exc:
        raise PrecisionError(f"bf16 is measured on OpenVINO: {exc}") from None
    refusal = bf16_refusal(detect_cpu())
    if refusal:
        raise PrecisionError(refusal)


def _split(request: QuantizeRequest, files: list[Path]) -> tuple[list[Path], list[Any]]:
    """Calibration and held-out pictures: a fixed-seed split of the folder, or generated pictures without one."""
    if files:
        split = split_images(files, min(request.calib_size, max(1, len(files) - 1)), request.holdout_size)
        return split.calibration, split.holdout
    return [], generated_images(min(request.holdout_size, 16))


def _holdout_reference(request: QuantizeRequest, source: Path, holdout: list[Any], form: tuple[str, Any, bool],
                       progress: Callable[[str, int], None], advance: Callable[[int], None]
                       ) -> tuple[np.ndarray, np.ndarray]:
    """The held-out pictures as the graph's input, and the float32 graph's logits of them (ONNX Runtime)."""
    input_name, spec, uint8 = form
    progress(f"measuring against float32 on {len(holdout)} held-out pictures", len(holdout))
    pictures = ImageBatches(holdout, input_name, spec, request.batch_size, uint8, on_batch=advance)
    inputs = np.concatenate(list(pictures.arrays()))
    return inputs, ort_logits(source, lambda dtype: inputs)


def _holdout_details(request: QuantizeRequest, inputs: np.ndarray) -> dict[str, Any]:
    return {"images": len(inputs), "source": str(request.calib) if request.calib is not None else "generated pictures"}


def _gate_bf16(request: QuantizeRequest, bundle: Bundle, holdout: list[Any], trained: bool,
               form: tuple[str, Any, bool], progress: Callable[[str, int], None],
               advance: Callable[[int], None]) -> QuantizeResult:
    """bf16 against float32 on the held-out pictures: the float32 graph compiled by OpenVINO in bf16 (refused in
    one line on a CPU without native bfloat16); figures go to ``stages.precision.bf16`` if the gate passes."""
    from sk_deploy.machine import BackendUnavailable
    from sk_deploy.runtime.openvino_backend import OpenVinoBackend, OpenVinoOptions

    source = bundle.file(SOURCE_FILE)
    try:
        backend = OpenVinoBackend(source, bundle, precision="bf16", options=OpenVinoOptions(cache_dir=""))
    except BackendUnavailable as exc:
        raise PrecisionError(str(exc)) from None
    with backend:
        inputs, reference = _holdout_reference(request, source, holdout, form, progress, advance)
        step = request.batch_size
        output = np.concatenate([backend.run(inputs[i:i + step]) for i in range(0, len(inputs), step)])
        details: dict[str, Any] = {"source": SOURCE_FILE, "file": None, "bf16": {
            "runtime": backend.description, "compiled_precision": backend.compiled_precision,
            "cpu": backend.cpu.describe()}, "holdout": _holdout_details(request, inputs)}
    accuracy = judge(f"{SOURCE_FILE} in bf16", BF16_KEY, reference, output, trained)
    result = QuantizeResult(SOURCE_FILE, written=accuracy.passed or not request.gate, accuracy=accuracy,
                            details=details)
    if result.written:
        bundle.record("precision", {**details, "accuracy": accuracy.to_dict()}, key=BF16_KEY)
        bundle.save()
        if accuracy.passed:
            _record_speed(request, bundle, BF16_KEY, progress)
    return result
