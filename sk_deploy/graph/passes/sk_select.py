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

Each Softmax in the graph is a candidate. A block is rewritten only when every fact the identity rests on
is checked: the softmax axis is the branch axis; the reshape target is constant and [N or -1, M, C, 1, 1]
for logits known to be (N, M*C, 1, 1); the Mul multiplies exactly that softmax and the stack; both sums are
over axis 1 without keepdims; the stack is M Unsqueeze(axis 1) of 4-D maps concatenated on axis 1, used by
nothing else; for M = 2 the logits come from a 1x1 Conv with constant weights (and bias, if any). Anything
else is left alone and reported with the reason. Run it after ``cleanup`` (constant reshape targets, shapes).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_ir as ir
import onnx_ir.passes.common as common_passes

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
            "skipped": [b.to_dict() for b in self.skipped],
            "branches": sorted({b.branches for b in self.rewritten if b.branches}),
            "nodes_before": self.nodes_before,
            "nodes_after": self.nodes_after,
            "seconds": round(self.seconds, 2),
        }


@dataclass
class _Block:
    """The matched nodes and values of one SK Select block."""

    name: str
    branches: list[ir.Value]  # U_1..U_M, 4-D
    channels: int
    logits: ir.Value  # (N, M*C, 1, 1)
    stack: ir.Node  # the Concat
    unsqueezes: list[ir.Node]
    fuse_sums: list[ir.Node]  # ReduceSum(S, 1) nodes: the Fuse
    select_sum: ir.Node  # ReduceSum(Mul(S, A), 1): the output V
    conv: ir.Node | None  # the select Conv, when foldable

    @property
    def m(self) -> int:
        return len(self.branches)


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


def _match(softmax: ir.Node) -> _Block:
    """Check one Softmax is the Select of an SK block; raise Skip with the reason if not."""
    attn = softmax.outputs[0]
    reshape = softmax.inputs[0].producer() if softmax.inputs[0] is not None else None
    if reshape is None or reshape.op_type != "Reshape" or reshape.domain != "":
        raise Skip("the softmax input is not a Reshape")
    target = _const_ints(reshape.inputs[1])
    if target is None:
        raise Skip("the reshape target is not a constant (run cleanup first)")
    if len(target) != 5 or target[1] < 2 or target[2] < 1 or target[3:] != [1, 1]:
        raise Skip(f"the reshape target {target} is not [N, M, C, 1, 1]")
    m, channels = target[1], target[2]
    logits = reshape.inputs[0]
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
    if _only_consumer(reshape.outputs[0], "the reshaped logits") is not softmax:
        raise Skip("the reshaped logits feed something besides the softmax")

    mul = _only_consumer(attn, "the softmax output")
    if mul.op_type != "Mul" or mul.domain != "" or len(mul.inputs) != 2:
        raise Skip(f"the softmax feeds a {mul.op_type}, not a Mul")
    if mul.inputs[0] is attn and mul.inputs[1] is not attn:
        stack_value = mul.inputs[1]
    elif mul.inputs[1] is attn and mul.inputs[0] is not attn:
        stack_value = mul.inputs[0]
    else:
        raise Skip("the Mul does not multiply the softmax by another tensor")
    select_sum = _only_consumer(mul.outputs[0], "the weighted stack")
    if not _is_branch_sum(select_sum, mul.outputs[0]):
        raise Skip("the weighted stack is not summed over axis 1 without keepdims")

    concat = stack_value.producer()
    if concat is None or concat.op_type != "Concat" or concat.domain != "":
        raise Skip("the softmax weights multiply a tensor that is not a Concat (stack) of branch maps")
    if concat.attributes.get_int("axis", 0) not in (1, -4):
        raise Skip("the stack is not concatenated on axis 1")
    if len(concat.inputs) != m:
        raise Skip(f"the stack has {len(concat.inputs)} branches but the logits are split into {m}")
    if stack_value.is_graph_output():
        raise Skip("the stack is a graph output")
    fuse_sums = [node for node in stack_value.consumers() if node is not mul]
    if not all(_is_branch_sum(node, stack_value) for node in fuse_sums):
        raise Skip("the stack is used by something besides the Mul and sums over the branch axis")

    unsqueezes, branches = [], []
    for value in concat.inputs:
        node = value.producer() if value is not None else None
        if node is None or node.op_type != "Unsqueeze" or _axes(node) not in ([1], [-4]):
            raise Skip("a stack input is not an Unsqueeze on axis 1")
        branch = node.inputs[0]
        shape = _shape_dims(branch)
        if shape is None or len(shape) != 4 or shape[1] != channels:
            raise Skip(f"branch map has shape {shape}, expected (N, {channels}, H, W)")
        unsqueezes.append(node)
        branches.append(branch)
    conv = _select_conv(logits, m, channels) if m == 2 else None
    return _Block(
        name=_block_name(softmax, conv if m == 2 else logits.producer()),
        branches=branches, channels=channels, logits=logits, stack=concat, unsqueezes=unsqueezes,
        fuse_sums=fuse_sums, select_sum=select_sum, conv=conv,
    )


# --------------------------------------------------------------------------------------------- rewriting


class _Builder:
    """Creates uniquely named nodes and initializers for one block, to be inserted before a node of the graph."""

    def __init__(self, graph: ir.Graph, prefix: str, counter: Iterator[int]) -> None:
        self.graph = graph
        self.prefix = prefix
        self.counter = counter
        self.nodes: list[ir.Node] = []

    def _name(self, op_type: str) -> str:
        return f"{self.prefix}/sk_select/{op_type}_{next(self.counter)}"

    def op(
        self, op_type: str, inputs: list[ir.Value], like: ir.Value | None = None, num_outputs: int = 1,
        attributes: Sequence[ir.Attr] = (),
    ) -> list[ir.Value]:
        name = self._name(op_type)
        node = ir.Node("", op_type, inputs, attributes=attributes, num_outputs=num_outputs, name=name)
        for i, out in enumerate(node.outputs):
            out.name = f"{name}_out{i}"
            if like is not None:
                out.dtype, out.shape = like.dtype, like.shape
        self.nodes.append(node)
        return list(node.outputs)

    def op1(self, op_type: str, inputs: list[ir.Value], like: ir.Value | None = None, **attrs: int) -> ir.Value:
        return self.op(op_type, inputs, like, attributes=[ir.AttrInt64(k, v) for k, v in attrs.items()])[0]

    def constant(self, array: np.ndarray, suffix: str) -> ir.Value:
        name = self._name(suffix)
        tensor = ir.tensor(array, name=name)
        value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(tensor.dtype), const_value=tensor)
        self.graph.register_initializer(value)
        return value

    def insert_before(self, node: ir.Node) -> None:
        self.graph.insert_before(node, self.nodes)
        self.nodes = []


def _replace(old: ir.Value, new: ir.Value) -> None:
    """Point every use of ``old`` at ``new``; a graph output keeps its name."""
    if old.is_graph_output():
        name = old.name
        old.replace_all_uses_with(new, replace_graph_outputs=True)
        old.name = None
        new.name = name
    else:
        old.replace_all_uses_with(new)


def _sum_chain(build: _Builder, terms: list[ir.Value], like: ir.Value) -> ir.Value:
    total = terms[0]
    for term in terms[1:]:
        total = build.op1("Add", [total, term], like=like)
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


def _rewrite(graph: ir.Graph, block: _Block, counter: Iterator[int]) -> None:
    first = block.branches[0]
    for fuse in block.fuse_sums:  # Fuse: U = U_1 + ... + U_M
        build = _Builder(graph, block.name, counter)
        total = _sum_chain(build, block.branches, like=fuse.outputs[0])
        build.insert_before(fuse)
        _replace(fuse.outputs[0], total)

    build = _Builder(graph, block.name, counter)
    if block.m == 2:  # V = U_2 + sigmoid(W' z + b') * (U_1 - U_2)
        conv = block.conv
        assert conv is not None
        weight, bias = _folded_weights(conv, block.channels)
        inputs = [conv.inputs[0], build.constant(weight, "gate_weight")]
        if bias is not None:
            inputs.append(build.constant(bias, "gate_bias"))
        attrs = [ir.Attr(a.name, a.type, a.value) for a in conv.attributes.values()]
        gate_logits = build.op("Conv", inputs, attributes=attrs)[0]
        gate = build.op1("Sigmoid", [gate_logits])
        u1, u2 = block.branches
        diff = build.op1("Sub", [u1, u2], like=first)
        scaled = build.op1("Mul", [gate, diff], like=first)
        result = build.op1("Add", [u2, scaled], like=first)
    else:  # softmax over (N, M, C), then V = sum_m U_m * a_m
        m, c = block.m, block.channels
        view = build.op1("Reshape", [block.logits, build.constant(np.array([-1, m, c], np.int64), "view_shape")])
        weights = build.op1("Softmax", [view], axis=1)
        parts = build.op("Split", [weights, build.constant(np.ones(m, np.int64), "split")], num_outputs=m,
                         attributes=[ir.AttrInt64("axis", 1)])
        per_channel = build.constant(np.array([-1, c, 1, 1], np.int64), "weight_shape")
        terms = []
        for branch, part in zip(block.branches, parts, strict=True):
            a = build.op1("Reshape", [part, per_channel])
            terms.append(build.op1("Mul", [branch, a], like=first))
        result = _sum_chain(build, terms, like=first)
    build.insert_before(block.select_sum)
    _replace(block.select_sum.outputs[0], result)


def apply(model: ir.Model) -> SKSelectReport:
    """Rewrite, in place, every SK Select block of ``model`` that can be proven one; report each candidate.

    Unused nodes and initializers are removed and the graph is sorted topologically; ``cleanup`` afterwards
    gives shapes to the new values.
    """
    start = time.perf_counter()
    graph = model.graph
    report = SKSelectReport(nodes_before=sum(1 for _ in graph))
    opset = model.opset_imports.get("", 0)
    counter = itertools.count()
    candidates = [node for node in graph if node.op_type == "Softmax" and node.domain == ""]
    for softmax in candidates:
        if opset < MIN_OPSET:
            report.blocks.append(BlockResult(softmax.name or "?", None, False, f"opset {opset} < {MIN_OPSET}"))
            continue
        try:
            block = _match(softmax)
        except Skip as reason:
            report.blocks.append(BlockResult(softmax.name or "<unnamed Softmax>", None, False, str(reason)))
            continue
        _rewrite(graph, block, counter)
        report.blocks.append(BlockResult(block.name, block.m, True))
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
