"""The Selective Kernel Select block without its stacked copy, its 5-D tensors and (for M = 2) its softmax.

What the exporters emit for an SK convolution with M branch maps U_1..U_M (each (N, C, H, W)) and the
attention vector z (N, d, 1, 1)::

    S = Concat(Unsqueeze(U_1, 1), ..., Unsqueeze(U_M, 1), axis=1)      # the stack, (N, M, C, H, W)
    U = ReduceSum(S, axes=1, keepdims=0)                               # Fuse (feeds the pool and z)
    A = Softmax(Reshape(Conv(z, W, b?), [-1, M, C, 1, 1]), axis=1)     # Select weights, (N, M, C, 1, 1)
    V = ReduceSum(Mul(S, A), axes=1, keepdims=0)                       # (N, C, H, W)

This pass rewrites it, exactly, into 4-D tensors only:

* Fuse: ``U = U_1 + ... + U_M`` (Add nodes).
* Select, M = 2: softmax([p, q])_0 = sigmoid(p - q), so the two logit matrices fold, in float32, into one:
  W' = W_1 - W_2 (rows of branch 0 minus rows of branch 1; biases likewise), and
  ``V = U_2 + Sigmoid(Conv(z, W')) * (U_1 - U_2)``.
* Select, M > 2: the softmax stays, over an (N, M, C) view of the logits; it is split per branch, each part
  reshaped to (N, C, 1, 1), and ``V = U_1 * a_1 + ... + U_M * a_M`` (Mul and Add on 4-D tensors).

The rewrite is two onnxscript rules. ``SKSelect``: the pattern ``ReduceSum(Mul(stack, Softmax(Reshape(logits,
shape))))``, a check, and a replacement per branch count (the sigmoid fold for M = 2, the split softmax for
M > 2). ``SKFuse``: ``ReduceSum(stack)`` once nothing else reads the stack, replaced by the Add chain. Each
Softmax in the graph is a candidate. A block is rewritten only when every fact the identity rests on is
checked: the softmax axis is the branch axis; the reshape target is constant and [N or -1, M, C, 1, 1]
for logits known to be (N, M*C, 1, 1); the Mul multiplies exactly that softmax and the stack; both sums are
over axis 1 without keepdims; the stack is M Unsqueeze(axis 1) of 4-D maps concatenated on axis 1, used by
nothing else; for M = 2 the logits come from a 1x1 Conv with constant weights (and bias, if any). Anything
else is left alone and reported with the reason. Run it after ``cleanup`` (constant reshape targets, shapes).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_ir as ir
import onnx_ir.passes.common as common_passes
from onnxscript.rewriter import MatchResult, RewriteRuleClassBase, RewriteRuleSet

MIN_OPSET = 13  # Softmax works on one axis from opset 13; below it flattens to 2-D


class Skip(Exception):
    """A candidate block that cannot be proven to be an SK Select; the message says why."""


@dataclass
class BlockResult:
    """One candidate block: its name, branch count, and what was done (with the reason when skipped)."""

    name: str
    branches: int | None
    rewritten: bool
    reason: str = ""

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready form."""
        out: dict[str, object] = {"block": self.name, "branches": self.branches}
        if not self.rewritten:
            out["reason"] = self.reason
        return out


@dataclass
class SKSelectReport:
    """Every candidate (each Softmax of the graph): rewritten blocks and skipped ones with reasons."""

    blocks: list[BlockResult] = field(default_factory=list)
    nodes_before: int = 0
    nodes_after: int = 0
    seconds: float = 0.0

    @property
    def rewritten(self) -> list[BlockResult]:
        """The blocks that were rewritten."""
        return [b for b in self.blocks if b.rewritten]

    @property
    def skipped(self) -> list[BlockResult]:
        """The candidates left alone, each with its reason."""
        return [b for b in self.blocks if not b.rewritten]

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready form for the manifest."""
        return {
            "rewritten": len(self.rewritten),
            "rewritten_blocks": [b.to_dict() for b in self.rewritten],
            "skipped": [b.to_dict() for b in self.skipped],
            "branches": sorted({b.branches for b in self.rewritten if b.branches}),
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "seconds": round(self.seconds, 2),
        }


# ---------------------------------------------------------------------------------------------- matching


def _const_ints(value: ir.Value | None) -> list[int] | None:
    if value is None:
        return None
    tensor = ir.convenience.get_const_tensor(value)
    if tensor is None:
        return None
    return [int(v) for v in np.asarray(tensor.numpy()).reshape(-1)]


def _axes(node: ir.Node) -> list[int] | None:
    """Constant axes of a Reduce*/Unsqueeze node: the second input (opset >= 13/18) or the attribute."""
    if len(node.inputs) > 1 and node.inputs[1] is not None:
        return _const_ints(node.inputs[1])
    axes = node.attributes.get_ints("axes", None)
    return None if axes is None else [int(a) for a in axes]


def _only_consumer(value: ir.Value, what: str) -> ir.Node:
    if value.is_graph_output():
        raise Skip(f"{what} is a graph output")
    consumers = list(value.consumers())
    if len(consumers) != 1:
        raise Skip(f"{what} has {len(consumers)} consumers, expected 1")
    return consumers[0]


def _is_branch_sum(node: ir.Node, stack: ir.Value) -> bool:
    """ReduceSum(stack, axes=[1], keepdims=0): a sum over the branch axis of the 5-D stack."""
    return (
        node.op_type == "ReduceSum" and node.domain == "" and node.inputs[0] is stack
        and _axes(node) in ([1], [-4]) and node.attributes.get_int("keepdims", 1) == 0
    )


def _shape_dims(value: ir.Value) -> list[int | None] | None:
    if value.shape is None:
        return None
    return [d if isinstance(d, int) else None for d in value.shape]


def _block_name(softmax: ir.Node, conv: ir.Node | None) -> str:
    if conv is not None and len(conv.inputs) > 1 and conv.inputs[1] is not None and conv.inputs[1].name:
        name = conv.inputs[1].name
        for suffix in (".attn.fc_select.weight", ".fc_select.weight", ".weight"):
            if name.endswith(suffix):
                return name[: -len(suffix)]
        return name
    return softmax.name or "<unnamed Softmax>"


def _select_conv(logits: ir.Value, m: int, channels: int) -> ir.Node:
    """The Conv producing the logits, checked to be a 1x1 conv with constant float weights (M*C, d, 1, 1)."""
    conv = logits.producer()
    if conv is None or conv.op_type != "Conv" or conv.domain != "":
        raise Skip("the logits are not produced by a Conv (cannot fold the two logit matrices)")
    if len(list(logits.consumers())) != 1 or logits.is_graph_output():
        raise Skip("the select Conv's output is used elsewhere")
    weight = ir.convenience.get_const_tensor(conv.inputs[1])
    if weight is None:
        raise Skip("the select Conv's weight is not a constant")
    if weight.dtype not in (ir.DataType.FLOAT, ir.DataType.FLOAT16):
        raise Skip(f"the select Conv's weight is {weight.dtype.name}, not float32/float16")
    shape = tuple(weight.shape)
    if len(shape) != 4 or shape[0] != m * channels or shape[2:] != (1, 1):
        raise Skip(f"the select Conv's weight has shape {shape}, expected ({m * channels}, d, 1, 1)")
    if conv.attributes.get_int("group", 1) != 1:
        raise Skip("the select Conv is grouped")
    if len(conv.inputs) > 2 and conv.inputs[2] is not None and ir.convenience.get_const_tensor(conv.inputs[2]) is None:
        raise Skip("the select Conv's bias is not a constant")
    return conv


def _stack_branches(stack: ir.Value, m: int | None = None, channels: int | None = None) -> list[ir.Value]:
    """U_1..U_M of ``stack = Concat(Unsqueeze(U_1, 1), ..., axis=1)``, each 4-D (with ``channels`` channels)."""
    concat = stack.producer()
    if concat is None or concat.op_type != "Concat" or concat.domain != "":
        raise Skip("the softmax weights multiply a tensor that is not a Concat (stack) of branch maps")
    if concat.attributes.get_int("axis", 0) not in (1, -4):
        raise Skip("the stack is not concatenated on axis 1")
    if m is not None and len(concat.inputs) != m:
        raise Skip(f"the stack has {len(concat.inputs)} branches but the logits are split into {m}")
    if stack.is_graph_output():
        raise Skip("the stack is a graph output")
    branches = []
    for value in concat.inputs:
        node = value.producer() if value is not None else None
        if node is None or node.op_type != "Unsqueeze" or _axes(node) not in ([1], [-4]):
            raise Skip("a stack input is not an Unsqueeze on axis 1")
        shape = _shape_dims(node.inputs[0])
        if shape is None or len(shape) != 4 or (channels is not None and shape[1] != channels):
            raise Skip(f"branch map has shape {shape}, expected (N, {channels}, H, W)")
        branches.append(node.inputs[0])
    return branches


@dataclass(frozen=True)
class _Select:
    """What the check proved about one block: its name, branch maps, channels and (M = 2) the select Conv."""

    name: str
    branches: list[ir.Value]
    channels: int
    conv: ir.Node | None

    @property
    def m(self) -> int:
        return len(self.branches)


def _prove(softmax: ir.Node, stack: ir.Value, logits: ir.Value, select: ir.Value) -> _Select:
    """Every fact the rewrite of a matched block rests on; a Skip with the reason for the first that fails."""
    reshape = softmax.inputs[0].producer()
    assert reshape is not None  # the pattern matched a Reshape
    target = _const_ints(reshape.inputs[1])
    if target is None:
        raise Skip("the reshape target is not a constant (run cleanup first)")
    if len(target) != 5 or target[1] < 2 or target[2] < 1 or target[3:] != [1, 1]:
        raise Skip(f"the reshape target {target} is not [N, M, C, 1, 1]")
    m, channels = target[1], target[2]
    dims = _shape_dims(logits)
    if dims is None or len(dims) != 4:
        raise Skip("the logits' shape is unknown (run cleanup first: shape inference)")
    if dims[1:] != [m * channels, 1, 1]:
        raise Skip(f"the logits have shape {dims}, not (N, {m * channels}, 1, 1)")
    allowzero = reshape.attributes.get_int("allowzero", 0)
    if not (target[0] == -1 or (target[0] == 0 and not allowzero) or (dims[0] is not None and target[0] == dims[0])):
        raise Skip(f"the reshape target's first entry {target[0]} does not keep the batch")
    if softmax.attributes.get_int("axis", -1) not in (1, -4):
        raise Skip(f"the softmax axis is {softmax.attributes.get_int('axis', -1)}, not the branch axis 1")
    select_sum = select.producer()
    assert select_sum is not None
    if not _is_branch_sum(select_sum, select_sum.inputs[0]):
        raise Skip("the weighted stack is not summed over axis 1 without keepdims")
    branches = _stack_branches(stack, m, channels)
    mul = select_sum.inputs[0].producer()
    if not all(node is mul or _is_branch_sum(node, stack) for node in stack.consumers()):
        raise Skip("the stack is used by something besides the Mul and sums over the branch axis")
    conv = _select_conv(logits, m, channels) if m == 2 else None
    return _Select(_block_name(softmax, conv if m == 2 else logits.producer()), branches, channels, conv)


def _unmatched(softmax: ir.Node) -> str:
    """Why a Softmax did not even match the Select pattern."""
    reshape = softmax.inputs[0].producer() if softmax.inputs[0] is not None else None
    if reshape is None or reshape.op_type != "Reshape" or reshape.domain != "":
        return "the softmax input is not a Reshape"
    try:
        if _only_consumer(reshape.outputs[0], "the reshaped logits") is not softmax:
            return "the reshaped logits feed something besides the softmax"
        mul = _only_consumer(softmax.outputs[0], "the softmax output")
        if mul.op_type != "Mul" or mul.domain != "" or len(mul.inputs) != 2:
            return f"the softmax feeds a {mul.op_type}, not a Mul"
        total = _only_consumer(mul.outputs[0], "the weighted stack")
    except Skip as reason:
        return str(reason)
    return f"the weighted stack feeds a {total.op_type}, not a ReduceSum"


def _add_all(op, terms: list[ir.Value]) -> ir.Value:
    total = terms[0]
    for term in terms[1:]:
        total = op.Add(total, term)
    return total


def _folded_weights(conv: ir.Node, channels: int) -> tuple[np.ndarray, np.ndarray | None]:
    """W' = W_1 - W_2 and b' = b_1 - b_2, computed in float32, returned in the weights' own dtype."""
    weight = ir.convenience.get_const_tensor(conv.inputs[1]).numpy()
    folded = (weight[:channels].astype(np.float32) - weight[channels:].astype(np.float32)).astype(weight.dtype)
    bias = None
    if len(conv.inputs) > 2 and conv.inputs[2] is not None:
        b = ir.convenience.get_const_tensor(conv.inputs[2]).numpy()
        bias = (b[:channels].astype(np.float32) - b[channels:].astype(np.float32)).astype(b.dtype)
    return folded, bias


class SKSelect(RewriteRuleClassBase):
    """The Select: ``V = ReduceSum(Mul(stack, Softmax(Reshape(logits, [N, M, C, 1, 1]))), 1)`` -> 4-D tensors.

    Replacement for M = 2: ``U_2 + Sigmoid(Conv(z, W_1 - W_2)) * (U_1 - U_2)``; for M > 2: the softmax over an
    (N, M, C) view, split per branch, ``sum_m U_m * a_m``. ``state`` collects each candidate's outcome.
    """

    def __init__(self, state: _State) -> None:
        super().__init__(name="SKSelect")
        self.state = state

    def pattern(self, op, stack, logits, shape):
        attn = op.Softmax(op.Reshape(logits, shape), _outputs=["attn"])
        return op.ReduceSum(op.Mul(stack, attn), _allow_other_inputs=True, _outputs=["select"])

    def check(self, context, stack: ir.Value, logits: ir.Value, attn: ir.Value, select: ir.Value,
              **_) -> MatchResult:
        softmax = attn.producer()
        assert softmax is not None
        try:
            _prove(softmax, stack, logits, select)
        except Skip as reason:
            self.state.reasons[softmax] = str(reason)
            return MatchResult().fail(str(reason))
        return MatchResult()

    def rewrite(self, op, stack: ir.Value, logits: ir.Value, attn: ir.Value, select: ir.Value, **_):
        softmax = attn.producer()
        assert softmax is not None
        block = _prove(softmax, stack, logits, select)
        self.state.done[softmax] = BlockResult(block.name, block.m, True)
        self.state.stacks.add(stack)
        prefix = f"{block.name}/sk_select/{next(self.state.counter)}"

        def constant(array: np.ndarray, what: str) -> ir.Value:
            return op.initializer(ir.tensor(array), name=f"{prefix}/{what}")

        if block.m == 2:
            assert block.conv is not None
            weight, bias = _folded_weights(block.conv, block.channels)
            inputs = [block.conv.inputs[0], constant(weight, "gate_weight")]
            if bias is not None:
                inputs.append(constant(bias, "gate_bias"))
            attributes = {a.name: a.value for a in block.conv.attributes.values()}
            gate = op.Sigmoid(op.Conv(*inputs, **attributes))
            u1, u2 = block.branches
            return op.Add(u2, op.Mul(gate, op.Sub(u1, u2)))
        m, c = block.m, block.channels
        weights = op.Softmax(op.Reshape(logits, constant(np.array([-1, m, c], np.int64), "view_shape")), axis=1)
        parts = op.Split(weights, constant(np.ones(m, np.int64), "split"), axis=1, _outputs=m)
        per_channel = constant(np.array([-1, c, 1, 1], np.int64), "weight_shape")
        return _add_all(op, [op.Mul(u, op.Reshape(a, per_channel)) for u, a in zip(block.branches, parts,
                                                                                    strict=True)])


class SKFuse(RewriteRuleClassBase):
    """The Fuse: ``U = ReduceSum(Concat(Unsqueeze(U_1, 1), ..., axis=1), 1)`` -> ``U_1 + ... + U_M``, for the
    stacks of blocks whose Select was rewritten (only such sums read them now)."""

    def __init__(self, state: _State) -> None:
        super().__init__(name="SKFuse")
        self.state = state

    def pattern(self, op, stack):
        return op.ReduceSum(stack, _allow_other_inputs=True, _outputs=["fuse"])

    def check(self, context, stack: ir.Value, fuse: ir.Value, **_) -> MatchResult:
        result = MatchResult()
        if stack not in self.state.stacks:
            return result.fail("not the stack of a rewritten Select")
        if not all(_is_branch_sum(node, stack) for node in stack.consumers()):
            return result.fail("the stack is read by something besides sums over the branch axis")
        try:
            _stack_branches(stack)
        except Skip as reason:
            return result.fail(str(reason))
        return result

    def rewrite(self, op, stack: ir.Value, fuse: ir.Value, **_):
        return _add_all(op, _stack_branches(stack))


@dataclass
class _State:
    """The outcome of each candidate Softmax while the rules run."""

    done: dict[ir.Node, BlockResult] = field(default_factory=dict)
    reasons: dict[ir.Node, str] = field(default_factory=dict)
    stacks: set[ir.Value] = field(default_factory=set)
    counter: itertools.count = field(default_factory=itertools.count)


def apply(model: ir.Model) -> SKSelectReport:
    """Rewrite, in place, every SK Select block of ``model`` that can be proven one; report each candidate.

    Unused nodes and initializers are removed and the graph is sorted topologically; ``cleanup`` afterwards
    gives shapes to the new values.
    """
    start = time.perf_counter()
    graph = model.graph
    report = SKSelectReport(nodes_before=sum(1 for _ in graph))
    opset = model.opset_imports.get("", 0)
    candidates = [node for node in graph if node.op_type == "Softmax" and node.domain == ""]
    state = _State()
    if opset >= MIN_OPSET:
        RewriteRuleSet([SKSelect.rule(state)], commute=True).apply_to_model(model)
        RewriteRuleSet([SKFuse.rule(state)]).apply_to_model(model)
    for softmax in candidates:
        name = softmax.name or "<unnamed Softmax>"
        if opset < MIN_OPSET:
            report.blocks.append(BlockResult(softmax.name or "?", None, False, f"opset {opset} < {MIN_OPSET}"))
        elif softmax in state.done:
            report.blocks.append(state.done[softmax])
        else:
            report.blocks.append(BlockResult(name, None, False, state.reasons.get(softmax) or _unmatched(softmax)))
    common_passes.RemoveUnusedNodesPass()(model)
    common_passes.TopologicalSortPass()(model)
    report.nodes_after = sum(1 for _ in graph)
    report.seconds = time.perf_counter() - start
    return report


def run(model: onnx.ModelProto) -> tuple[onnx.ModelProto, SKSelectReport]:
    """``apply`` on a proto of its own: returns the new model and the report; the input is not modified."""
    ir_model = ir.from_proto(model)
    report = apply(ir_model)
    return ir.to_proto(ir_model), report
