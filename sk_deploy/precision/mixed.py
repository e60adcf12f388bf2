"""The TensorRT INT8 form as INT8 + FP16: Q/DQ where they are, every other float operation in float16.

TensorRT 11 builds strongly typed networks: a float32 tensor of the ONNX graph runs in FP32. The Q/DQ graph that
``int8.quantize_int8`` writes leaves everything between the quantized convolutions float32 (the SK Select
arithmetic on full-size maps, the attention convolutions, the classifier): FP32 islands. Here each node gets a
compute type, walking the graph in order:

- ``QuantizeLinear`` runs in the type of the tensor it reads (its scale takes that type);
- ``DequantizeLinear`` outputs float16 (a float16 scale), unless every reader of it stays float32;
- the kinds where float16 is unsafe (``FP32_OPS``: reductions and averaging pools, which sum many values, and
  Softmax, which only the M > 2 Select has), and whatever the caller names, stay float32;
- everything else runs in float16; MaxPool too, since a maximum is exact in any float type.

Casts go only where a float16 tensor meets a float32 reader (or the reverse); graph inputs and outputs stay
float32. A float16 scale on QuantizeLinear/DequantizeLinear needs opset 19, so a graph below it is converted
(every op that changed from 18 to 19 only gained types).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from sk_deploy.precision.fp16 import DEFAULT_FP32_OPS, PrecisionError

HIGH_PRECISIONS = ("fp16", "fp32")
FP32_OPS = (*DEFAULT_FP32_OPS, "Softmax", "GlobalLpPool", "LpPool", "ReduceL2", "ReduceLogSumExp")
MIN_OPSET = 19
FLOATS = (TensorProto.FLOAT, TensorProto.FLOAT16)
FP16_MAX = float(np.finfo(np.float16).max)
FP16_TINY = float(np.finfo(np.float16).tiny)


@dataclass
class MixedReport:
    """What the float16 conversion of an INT8 graph did."""

    high_precision: str
    opset: int
    fp32_op_types: list[str]
    fp32_nodes: list[str] = field(default_factory=list)
    float16_nodes: int = 0
    float32_nodes: int = 0
    casts_added: int = 0
    float16_scales: int = 0
    subnormal_scales: int = 0
    """Q/DQ scales below float16's smallest normal value: stored with fewer significant bits."""
    values_clamped: int = 0
    float32_full_maps: list[str] = field(default_factory=list)
    """Float32 nodes on full-size maps outside FP32_OPS (see ``float32_islands``); empty when all went well."""


def _default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def at_opset(model: onnx.ModelProto, opset: int = MIN_OPSET) -> onnx.ModelProto:
    """``model`` at ``opset`` at least (converted by ONNX's version converter when below it)."""
    if _default_opset(model) >= opset:
        return model
    try:
        return onnx.version_converter.convert_version(model, opset)
    except Exception as exc:  # the converter raises bare RuntimeErrors naming the op it cannot adapt
        raise PrecisionError(f"cannot bring the graph to opset {opset} for float16 Q/DQ scales: {exc}") from None


def elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """The element type of every named tensor of ``model`` (shape inference fills the intermediates)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.value_info, *g.output]}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


def _half(array: np.ndarray) -> tuple[np.ndarray, int]:
    """``array`` as float16, values beyond its range clamped; returns the clamped count too."""
    clamped = int(np.count_nonzero(np.abs(array) > FP16_MAX))
    return np.clip(array, -FP16_MAX, FP16_MAX).astype(np.float16), clamped


class _Converter:
    """One pass over the nodes of a graph, in order, giving each its compute type."""

    def __init__(self, model: onnx.ModelProto, keep_fp32: set[str]) -> None:
        self.model = model
        self.graph = model.graph
        self.types = elem_types(model)
        self.keep_fp32 = keep_fp32
        self.inits = {t.name: t for t in self.graph.initializer}
        self.readers: dict[str, list[onnx.NodeProto]] = {}
        for node in self.graph.node:
            for name in node.input:
                self.readers.setdefault(name, []).append(node)
        self.dtype: dict[str, int] = {v.name: v.type.tensor_type.elem_type for v in self.graph.input}
        self.casts: dict[tuple[str, int], str] = {}
        self.converted: dict[str, str] = {}
        self.nodes: list[onnx.NodeProto] = []
        self.report = MixedReport("fp16", _default_opset(model), sorted(keep_fp32))

    def compute_type(self, node: onnx.NodeProto) -> int:
        if node.op_type == "QuantizeLinear":
            return self.dtype.get(node.input[0], self.types.get(node.input[0], TensorProto.FLOAT))
        if node.op_type == "DequantizeLinear":
            readers = self.readers.get(node.output[0], [])
            outputs = {o.name for o in self.graph.output}
            stays = node.output[0] in outputs or (readers and all(self._is_fp32(r) for r in readers))
            return TensorProto.FLOAT if stays else TensorProto.FLOAT16
        return TensorProto.FLOAT if self._is_fp32(node) else TensorProto.FLOAT16

    def _is_fp32(self, node: onnx.NodeProto) -> bool:
        return node.op_type in self.keep_fp32 or node.name in self.keep_fp32

    def cast(self, name: str, to: int) -> str:
        key = (name, to)
        if key not in self.casts:
            out = f"{name}/{'fp16' if to == TensorProto.FLOAT16 else 'fp32'}"
            self.nodes.append(helper.make_node("Cast", [name], [out], name=f"{out}/Cast", to=to))
            self.casts[key] = out
            self.report.casts_added += 1
        return self.casts[key]

    def initializer(self, name: str, to: int, scale: bool) -> str:
        tensor = self.inits[name]
        if tensor.data_type == to or to != TensorProto.FLOAT16:
            return name
        if name not in self.converted:
            array = numpy_helper.to_array(tensor)
            half, clamped = _half(array)
            self.report.values_clamped += clamped
            if scale:
                self.report.float16_scales += 1
                self.report.subnormal_scales += int(np.count_nonzero((np.abs(half) < FP16_TINY) & (half != 0)))
            converted = numpy_helper.from_array(half, f"{name}/fp16")
            self.graph.initializer.append(converted)
            self.converted[name] = converted.name
        return self.converted[name]

    def visit(self, node: onnx.NodeProto) -> None:
        to = self.compute_type(node)
        qdq = node.op_type in ("QuantizeLinear", "DequantizeLinear")
        for k, name in enumerate(node.input):
            if not name or self.types.get(name) not in FLOATS:
                continue
            if name in self.inits:
                node.input[k] = self.initializer(name, to, scale=qdq)
            elif self.dtype.get(name, TensorProto.FLOAT) != to:
                node.input[k] = self.cast(name, to)
        if node.op_type == "Cast":
            attr = next(a for a in node.attribute if a.name == "to")
            if attr.i in FLOATS:
                attr.i = to
        if node.op_type == "Constant":
            self._constant(node, to)
        for name in node.output:
            if self.types.get(name) in FLOATS:
                self.dtype[name] = to
        if any(self.types.get(o) in FLOATS for o in node.output) and node.op_type != "QuantizeLinear":
            if to == TensorProto.FLOAT16:
                self.report.float16_nodes += 1
            else:
                self.report.float32_nodes += 1
        self.nodes.append(node)

    def _constant(self, node: onnx.NodeProto, to: int) -> None:
        for attr in node.attribute:
            if attr.name == "value" and attr.t.data_type == TensorProto.FLOAT and to == TensorProto.FLOAT16:
                half, _ = _half(numpy_helper.to_array(attr.t))
                attr.t.CopyFrom(numpy_helper.from_array(half, attr.t.name))

    def finish(self) -> None:
        """Float32 graph outputs (a Cast named as the output), the node list, unused initializers dropped."""
        for output in self.graph.output:
            if self.dtype.get(output.name) != TensorProto.FLOAT16:
                continue
            inner = f"{output.name}/fp16"
            for node in self.nodes:
                node.output[:] = [inner if o == output.name else o for o in node.output]
                node.input[:] = [inner if i == output.name else i for i in node.input]
            self.nodes.append(helper.make_node("Cast", [inner], [output.name], name=f"{output.name}/Cast",
                                               to=TensorProto.FLOAT))
            self.report.casts_added += 1
        del self.graph.node[:]
        self.graph.node.extend(self.nodes)
        read = {i for n in self.graph.node for i in n.input}
        kept = [t for t in self.graph.initializer if t.name in read]
        del self.graph.initializer[:]
        self.graph.initializer.extend(kept)
        del self.graph.value_info[:]


def to_mixed(
    model: onnx.ModelProto, high_precision: str = "fp16", exclude: Iterable[str] = ()
) -> tuple[onnx.ModelProto, MixedReport]:
    """The INT8 Q/DQ ``model`` with its non-quantized part in ``high_precision`` (fp16: see the module's text).

    ``exclude`` names op types or nodes to keep float32 besides ``FP32_OPS``. With ``fp32`` the model is
    returned as it is.
    """
    if high_precision not in HIGH_PRECISIONS:
        raise PrecisionError(f"unknown high precision {high_precision!r}; choose one of: {', '.join(HIGH_PRECISIONS)}")
    if high_precision == "fp32":
        kept = sorted({n.op_type for n in model.graph.node} - {"QuantizeLinear", "DequantizeLinear"})
        return model, MixedReport("fp32", _default_opset(model), kept)
    model = at_opset(onnx.ModelProto.FromString(model.SerializeToString()))
    exclude = set(exclude)
    converter = _Converter(model, set(FP32_OPS) | exclude)
    converter.report.fp32_op_types = sorted(set(FP32_OPS) | {e for e in exclude if e[:1].isupper() and "/" not in e})
    converter.report.fp32_nodes = sorted(exclude & {n.name for n in model.graph.node})
    for node in list(model.graph.node):
        converter.visit(node)
    converter.finish()
    model = onnx.shape_inference.infer_shapes(model)
    converter.report.opset = _default_opset(model)
    converter.report.float32_full_maps = float32_islands(model, exclude)
    return model, converter.report


def _spatial(shape: list[int | None]) -> bool:
    """A 4-D map larger than 1x1 (an unknown size counts as large)."""
    return len(shape) == 4 and any(d is None or d > 1 for d in shape[2:])


def float32_islands(model: onnx.ModelProto, allowed: Iterable[str] = ()) -> list[str]:
    """Nodes that compute in float32 on a full-size activation map (4-D, larger than 1x1), outside ``FP32_OPS``
    and ``allowed`` (op types or node names).

    A node counts as float32 when a float tensor it reads or writes is float32. Not counted: the Casts into
    and out of float32 kinds, and the readers of the graph's (float32) inputs.
    """
    allowed = set(FP32_OPS) | set(allowed)
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    info = {v.name: v.type.tensor_type for v in [*g.input, *g.value_info, *g.output]}
    info.update({t.name: onnx.helper.make_tensor_type_proto(t.data_type, list(t.dims)).tensor_type
                 for t in g.initializer})
    inputs = {v.name for v in g.input}

    def shape(name: str) -> list[int | None]:
        return [d.dim_value if d.HasField("dim_value") else None for d in info[name].shape.dim]

    islands = []
    for node in g.node:
        if node.op_type in allowed or node.name in allowed or node.op_type == "Cast":
            continue
        tensors = [t for t in [*node.input, *node.output] if t and t in info and t not in inputs]
        fp32_maps = [t for t in tensors if info[t].elem_type == TensorProto.FLOAT and _spatial(shape(t))]
        if fp32_maps:
            islands.append(node.name or node.op_type)
    return islands


def check_high_precision(precision: str, target: str, high_precision: str | None) -> None:
    """Refuse a high precision that does not apply: an unknown one, one given to FP16, fp16 on the CPU form."""
    if high_precision is None:
        return
    if high_precision not in HIGH_PRECISIONS:
        raise PrecisionError(f"unknown high precision {high_precision!r}; choose one of: {', '.join(HIGH_PRECISIONS)}")
    if precision != "int8":
        raise PrecisionError("--high-precision applies to --precision int8 only")
    if target == "cpu" and high_precision == "fp16":
        raise PrecisionError("--high-precision fp16 is for the TensorRT form; ONNX Runtime's CPU int8 kernels take "
                             "float32 around them (use --target tensorrt, or --high-precision fp32)")
