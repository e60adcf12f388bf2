"""INT8 graphs calibrated on real images, through onnxruntime.quantization.

Two targets, two different graphs (SKNET.md section 5):

- ``tensorrt``: explicit QuantizeLinear/DequantizeLinear, int8 activations and weights, symmetric (zero
  point 0), per-channel weights, biases left float. Q/DQ sit where TensorRT fuses them: on the inputs and
  weights of every spatial Conv, and on both inputs of each residual Add (an Add whose result only feeds a
  Relu), so the Add folds into the preceding convolution's epilogue; never on outputs. ``mixed.to_mixed``
  then puts the rest in float16 (``--high-precision``). The classifier (Gemm) and the attention
  convolutions on pooled 1x1 maps stay float: a sliver of the compute, and the most sensitive to rounding.
- ``cpu``: the form ONNX Runtime runs fast on x86: uint8 activations (asymmetric), int8 per-channel weights
  (U8S8), in QDQ form, which ONNX Runtime fuses into QLinearConv and friends; grouped convolutions stay
  float there (see ``nodes_to_quantize``).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from sk_deploy.precision.calibration import ImageBatches
from sk_deploy.precision.fp16 import PrecisionError, resolve_exclusions
from sk_deploy.settings.precision import METHODS

TARGETS = ("tensorrt", "cpu")


@dataclass
class Int8Report:
    """What quantization did and on what."""

    target: str
    method: str
    calibration_images: int
    skipped_images: list[str] = field(default_factory=list)
    quantized_nodes: int = 0
    quantize_linear: int = 0
    dequantize_linear: int = 0
    per_channel_weights: int = 0


def _name_nodes(model: onnx.ModelProto) -> None:
    """Give unnamed nodes a unique name: ONNX Runtime's quantizer selects nodes by name."""
    taken = {n.name for n in model.graph.node if n.name}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def residual_adds(model: onnx.ModelProto) -> list[str]:
    """Names of the Add nodes whose only consumers are Relu nodes: the residual joins of ResNet blocks."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in model.graph.output}
    return [
        n.name for n in model.graph.node
        if n.op_type == "Add" and n.output[0] not in outputs
        and consumers.get(n.output[0]) and all(c.op_type == "Relu" for c in consumers[n.output[0]])
    ]


def attention_convs(model: onnx.ModelProto) -> set[str]:
    """Convs that work on pooled (1x1) maps: SK fuse/select and SE excitation layers.

    They hold a sliver of the compute and set the attention weights, where int8 rounding moves every channel
    of a block at once; they stay float.
    """
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {
        v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
        for v in [*inferred.graph.value_info, *inferred.graph.output]
    }
    return {
        n.name for n in model.graph.node
        if n.op_type == "Conv" and (shape := shapes.get(n.output[0])) and len(shape) == 4 and shape[2:] == [1, 1]
    }


def nodes_to_quantize(model: onnx.ModelProto, target: str) -> list[str]:
    """The nodes whose inputs get Q/DQ for ``target``."""
    skip = attention_convs(model)
    compute = [n.name for n in model.graph.node if n.op_type == "Conv" and n.name not in skip]
    if target == "tensorrt":
        return compute + residual_adds(model)
    # ONNX Runtime's int8 kernels are slow on grouped convolutions (ResNeXt's 32 groups of 4 channels): on
    # SKNet-50 (2-core AVX2) int8 with them ran 0.96-1.07x float32, without them 1.27-1.29x. They stay float.
    grouped = {n.name for n in model.graph.node if n.op_type == "Conv" and _group(n) > 1}
    pools = [n.name for n in model.graph.node if n.op_type == "MaxPool"]
    return [n for n in compute if n not in grouped] + residual_adds(model) + pools


def _group(node: onnx.NodeProto) -> int:
    return next((a.i for a in node.attribute if a.name == "group"), 1)


def _strided(reader: ImageBatches) -> int:
    """Batches per calibration pass: bounds the activations ONNX Runtime keeps in memory at once."""
    batches = -(-len(reader.files) // reader.batch_size)
    return max(d for d in range(1, min(8, batches) + 1) if batches % d == 0)


class _RangedReader:
    """ImageBatches with the ``__len__`` / ``set_range`` that ONNX Runtime's strided calibration uses."""

    def __init__(self, batches: ImageBatches) -> None:
        self.batches = batches
        self.all_files = list(batches.files)
        self.seen = 0
        self.skipped: list[str] = []

    def __len__(self) -> int:
        return -(-len(self.all_files) // self.batches.batch_size)

    def set_range(self, start_index: int, end_index: int) -> None:
        size = self.batches.batch_size
        self.batches.files = self.all_files[start_index * size: end_index * size]
        self.batches.rewind()

    def get_next(self):
        feed = self.batches.get_next()
        if feed is None:
            self.seen += self.batches.used
            self.skipped += [f"{p}: {why}" for p, why in self.batches.skipped]
        return feed

    def rewind(self) -> None:
        self.batches.rewind()


def quantize_int8(
    model: onnx.ModelProto,
    output: Path,
    reader: ImageBatches,
    target: str = "tensorrt",
    method: str = "minmax",
    exclude: Iterable[str] = (),
) -> Int8Report:
    """Calibrate ``model`` on ``reader``'s images and write its INT8 form for ``target`` to ``output``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if target not in TARGETS:
        raise PrecisionError(f"unknown INT8 target {target!r}; choose one of: {', '.join(TARGETS)}")
    if method not in METHODS:
        raise PrecisionError(f"unknown calibration method {method!r}; choose one of: {', '.join(METHODS)}")
    model = onnx.ModelProto.FromString(model.SerializeToString())
    _name_nodes(model)
    ops, nodes = resolve_exclusions(model, exclude)
    excluded = set(nodes) | {n.name for n in model.graph.node if n.op_type in ops}
    selected = [n for n in nodes_to_quantize(model, target) if n not in excluded]
    tensorrt = target == "tensorrt"
    ranged = _RangedReader(reader)
    calibrate = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
                 "percentile": CalibrationMethod.Percentile}[method]
    extra = {
        "ActivationSymmetric": tensorrt,
        "WeightSymmetric": True,
        "QuantizeBias": not tensorrt,  # TensorRT takes float biases and folds them itself
        "CalibStridedMinMax": _strided(reader),
        "CalibTensorRangeSymmetric": tensorrt,
    }
    if tensorrt:
        # Q/DQ on the inputs of the quantized nodes only, as TensorRT's placement guidance and Model Optimizer do:
        # a Q/DQ on a Conv's output (before its Relu) rounds the map twice before the next Conv. Measured on
        # SKNet-50 (64x64, 32 real photos): 69 Q instead of 134, SQNR 22.3 dB instead of 21.3 (benchmarks/modelopt).
        extra["OpTypesToExcludeOutputQuantization"] = sorted({n.op_type for n in model.graph.node})
    with tempfile.TemporaryDirectory(prefix="sk-deploy-int8-") as tmp:
        source = Path(tmp) / "input.onnx"
        onnx.save_model(model, source)
        quant_logger = logging.getLogger()
        level = quant_logger.level
        quant_logger.setLevel(logging.ERROR)  # the quantizer's "consider pre-processing" advice does not apply
        try:
            quantize_static(
                source,
                output,
                ranged,
                quant_format=QuantFormat.QDQ,
                nodes_to_quantize=selected,
                per_channel=True,
                activation_type=QuantType.QInt8 if tensorrt else QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=calibrate,
                extra_options=extra,
            )
        finally:
            quant_logger.setLevel(level)
    if ranged.seen == 0:
        raise PrecisionError("calibration read no image")
    quantized = onnx.load(output)
    per_channel = sum(
        1 for n in quantized.graph.node
        if n.op_type == "DequantizeLinear" and _is_per_channel(quantized, n)
    )
    return Int8Report(
        target=target,
        method=method,
        calibration_images=ranged.seen,
        skipped_images=ranged.skipped,
        quantized_nodes=len(selected),
        quantize_linear=sum(n.op_type == "QuantizeLinear" for n in quantized.graph.node),
        dequantize_linear=sum(n.op_type == "DequantizeLinear" for n in quantized.graph.node),
        per_channel_weights=per_channel,
    )


def _is_per_channel(model: onnx.ModelProto, node: onnx.NodeProto) -> bool:
    scales = {t.name: t for t in model.graph.initializer}
    scale = scales.get(node.input[1])
    return scale is not None and len(scale.dims) == 1 and scale.dims[0] > 1
