"""FP16: float16 compute with float32 graph inputs and outputs, through onnxconverter-common."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field

import onnx

from sk_deploy.errors import SkDeployError

# Reductions and pools accumulate over many values; in float16 they lose precision (a global average over
# 7x7x2048 values) or overflow (a sum), so they stay float32 with casts around them.
DEFAULT_FP32_OPS = ("GlobalAveragePool", "ReduceMean", "ReduceSum", "AveragePool")


class PrecisionError(SkDeployError, ValueError):
    """A precision request that cannot be carried out; the message is meant for a person."""


@dataclass
class Fp16Report:
    """What the conversion did."""

    fp32_op_types: list[str]
    fp32_nodes: list[str] = field(default_factory=list)
    float16_initializers: int = 0
    float32_initializers: int = 0
    casts_added: int = 0
    values_clamped: int = 0
    """Weights whose magnitude was below float16's range and were clamped to +-1e-7 or 0."""


def resolve_exclusions(model: onnx.ModelProto, exclude: Iterable[str]) -> tuple[list[str], list[str]]:
    """Split user exclusions into op types and node names of ``model``; an unknown entry is an error."""
    op_types = {n.op_type for n in model.graph.node}
    names = {n.name for n in model.graph.node}
    ops, nodes = [], []
    for entry in exclude:
        if entry in op_types:
            ops.append(entry)
        elif entry in names:
            nodes.append(entry)
        else:
            raise PrecisionError(
                f"--exclude {entry!r}: no op type or node of that name in the graph "
                f"(op types: {', '.join(sorted(op_types))})"
            )
    return ops, nodes


def convert_fp16(model: onnx.ModelProto, exclude: Iterable[str] = ()) -> tuple[onnx.ModelProto, Fp16Report]:
    """Return a float16 copy of ``model`` whose inputs and outputs stay float32.

    Reductions and pools (``DEFAULT_FP32_OPS``) and whatever ``exclude`` names (op types or node names) stay
    float32. Constants folded in float32 upstream (the SK select matrix A1 - A2) are cast once, here.
    """
    from onnxconverter_common import float16

    ops, nodes = resolve_exclusions(model, exclude)
    block_ops = sorted(set(DEFAULT_FP32_OPS) | set(ops))
    before = sum(n.op_type == "Cast" for n in model.graph.node)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        converted = float16.convert_float_to_float16(
            model,
            keep_io_types=True,
            op_block_list=block_ops,
            node_block_list=nodes,
            disable_shape_infer=False,
        )
    # The converter warns once per weight value below float16's smallest normal it clamps; count, not print.
    clamped = sum("truncated" in str(w.message) for w in caught)
    _restore_float32_weights(converted, model)
    inits = converted.graph.initializer
    report = Fp16Report(
        fp32_op_types=block_ops,
        fp32_nodes=nodes,
        float16_initializers=sum(t.data_type == onnx.TensorProto.FLOAT16 for t in inits),
        float32_initializers=sum(t.data_type == onnx.TensorProto.FLOAT for t in inits),
        casts_added=sum(n.op_type == "Cast" for n in converted.graph.node) - before,
        values_clamped=clamped,
    )
    return converted, report


def _restore_float32_weights(converted: onnx.ModelProto, original: onnx.ModelProto) -> None:
    """Give float32 nodes their original float32 weights back.

    The converter stores every initializer as float16 and casts it back up in front of a float32 node, so
    an excluded node would still see weights rounded to float16. Each such Cast is replaced by the
    original float32 initializer; a float16 copy nothing else reads is dropped.
    """
    originals = {t.name: t for t in original.graph.initializer if t.data_type == onnx.TensorProto.FLOAT}
    graph = converted.graph
    half = {t.name for t in graph.initializer if t.data_type == onnx.TensorProto.FLOAT16}
    casts = [
        n for n in graph.node
        if n.op_type == "Cast" and n.input[0] in half and n.input[0] in originals
        and next(a.i for a in n.attribute if a.name == "to") == onnx.TensorProto.FLOAT
    ]
    for cast in casts:
        restored = onnx.TensorProto()
        restored.CopyFrom(originals[cast.input[0]])
        restored.name = cast.output[0]
        graph.initializer.append(restored)
        graph.node.remove(cast)
    still_read = {i for n in graph.node for i in n.input} | {o.name for o in graph.output}
    for tensor in [t for t in graph.initializer if t.name in half and t.name not in still_read]:
        graph.initializer.remove(tensor)
