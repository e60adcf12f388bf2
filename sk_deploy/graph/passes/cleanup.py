"""Cleanup: what every exported graph needs before anything clever is done to it.

1. onnxslim as the first stage: constant folding with symbolic shapes, which turns the legacy exporter's
   ``Shape -> Gather -> Div -> Cast -> Unsqueeze -> Concat`` reshape targets into constants, and drops
   ``Identity`` and dead nodes.
2. onnxscript's optimizer: its own constant folding, basic algebraic rules, common subexpressions, dead code.
3. ``ReduceMean`` over the two spatial axes of a 4-D tensor with ``keepdims=1`` becomes ``GlobalAveragePool``
   (an onnxscript rewrite rule; the same tensor, a kernel every runtime has a fast path for).
4. ONNX shape inference (strict), then the full ``onnx.checker``.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_ir as ir
import onnx_ir.passes.common as common_passes
from onnxscript import optimizer, rewriter
from onnxscript.rewriter import MatchResult, RewriteRuleClassBase


@dataclass
class CleanupReport:
    """Node counts before and after, and how many ReduceMean nodes became GlobalAveragePool."""

    nodes_before: int
    nodes_after: int
    ops_removed: dict[str, int] = field(default_factory=dict)
    ops_added: dict[str, int] = field(default_factory=dict)
    global_pools: int = 0
    slim: bool = True
    seconds: float = 0.0

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready form for the manifest."""
        return {
            "nodes_before": self.nodes_before, "nodes_after": self.nodes_after,
            "ops_removed": self.ops_removed, "ops_added": self.ops_added,
            "reduce_mean_to_global_pool": self.global_pools, "onnxslim": self.slim,
            "seconds": round(self.seconds, 2),
        }


def _reduce_axes(node: ir.Node) -> list[int] | None:
    """The constant axes of a Reduce* node (input from opset 18, attribute before); None if not constant."""
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        tensor = ir.convenience.get_const_tensor(node.inputs[1])
        return None if tensor is None else [int(a) for a in np.asarray(tensor.numpy()).reshape(-1)]
    axes = node.attributes.get_ints("axes", None)
    return None if axes is None else [int(a) for a in axes]


class ReduceMeanToGlobalAveragePool(RewriteRuleClassBase):
    """``ReduceMean(x, axes=(2, 3), keepdims=1)`` on a 4-D tensor is ``GlobalAveragePool(x)``."""

    def pattern(self, op, x):
        return op.ReduceMean(x, _allow_other_inputs=True, _outputs=["mean"])

    def check(self, context, x: ir.Value, mean: ir.Value, **_) -> MatchResult:
        result = MatchResult()
        node = mean.producer()
        if x.shape is None or x.shape.rank() != 4:
            return result.fail("input is not known to be 4-D")
        if node.attributes.get_int("keepdims", 1) != 1:
            return result.fail("keepdims is 0")
        axes = _reduce_axes(node)
        if axes is None or sorted(a % 4 for a in axes) != [2, 3]:
            return result.fail(f"axes {axes} are not the two spatial axes")
        return result

    def rewrite(self, op, x: ir.Value, mean: ir.Value, **_):
        return op.GlobalAveragePool(x)


def histogram(model: onnx.ModelProto | ir.Model) -> Counter[str]:
    """How many nodes of each op type the main graph has."""
    nodes = model.graph.node if isinstance(model, onnx.ModelProto) else model.graph
    return Counter(node.op_type for node in nodes)


def infer_and_check(model: onnx.ModelProto) -> onnx.ModelProto:
    """Strict ONNX shape inference, then the full checker; returns the model with inferred value infos."""
    model = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    onnx.checker.check_model(model, full_check=True)
    return model


def run_onnxslim(model: onnx.ModelProto) -> onnx.ModelProto:
    """onnxslim's constant folding with symbolic shapes (it works on the proto, so it runs before the IR)."""
    import onnxslim

    return onnxslim.slim(model)


def apply(model: ir.Model, before: Counter[str] | None = None, slimmed: bool = True) -> CleanupReport:
    """Clean ``model`` in place: onnxscript's optimizer, ReduceMean -> GlobalAveragePool, dead nodes, topological
    order. ``before``: the op histogram to report against (default: the model's on entry)."""
    start = time.perf_counter()
    before = before if before is not None else histogram(model)
    optimizer.optimize(model)
    means = sum(node.op_type == "ReduceMean" for node in model.graph)
    rewriter.rewrite(model, [ReduceMeanToGlobalAveragePool.rule()])
    pools = means - sum(node.op_type == "ReduceMean" for node in model.graph)
    common_passes.RemoveUnusedNodesPass()(model)
    common_passes.TopologicalSortPass()(model)
    after = histogram(model)
    return CleanupReport(
        nodes_before=sum(before.values()), nodes_after=sum(after.values()),
        ops_removed=dict(sorted((before - after).items())), ops_added=dict(sorted((after - before).items())),
        global_pools=pools, slim=slimmed, seconds=time.perf_counter() - start,
    )


def run(model: onnx.ModelProto, slim: bool = True) -> tuple[onnx.ModelProto, CleanupReport]:
    """Clean a proto on its own (see the module docstring; ``optimize`` runs ``apply`` on its one IR model);
    returns the new model, shape-inferred and checked, and a report. The input is untouched."""
    start = time.perf_counter()
    before = histogram(model)
    if slim:
        model = run_onnxslim(model)
    ir_model = ir.from_proto(model)
    report = apply(ir_model, before, slimmed=slim)
    result = infer_and_check(ir.to_proto(ir_model))
    report.seconds = time.perf_counter() - start
    return result, report
