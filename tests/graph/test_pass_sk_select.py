"""The SK Select rewrite: exact on real ONNX Runtime sessions, for both exporters, for SK code written by
someone else (timm's style, here), with and without input split, M = 2 and 3; and left alone, with a reason,
whenever the block differs from what the identity needs."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from sk_deploy.graph.describe import tensor_ranks
from sk_deploy.graph.export import export_onnx
from sk_deploy.graph.passes import cleanup, sk_select
from tests.graph.conftest import calibrate_bn, random_batch, run, torch_out


class TimmStyleSK(nn.Module):
    """A Selective Kernel convolution written the way timm's ``SelectiveKernel`` is, independent of sk_deploy:
    branch convs with growing dilation, stack on dim 1, sum(1), mean((2, 3), keepdim=True), fc_reduce, bn, act,
    fc_select, view(B, M, C, 1, 1), softmax(dim=1), (x * attn).sum(1)."""

    def __init__(self, in_ch: int, out_ch: int, paths: int = 2, split: bool = False, select_bias: bool = False):
        super().__init__()
        self.split = split
        self.paths_n = paths
        path_in = in_ch // paths if split else in_ch
        self.paths = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(path_in, out_ch, 3, padding=m + 1, dilation=m + 1, bias=False),
                nn.BatchNorm2d(out_ch), nn.ReLU(inplace=True),
            )
            for m in range(paths)
        )
        attn = max(out_ch // 4, 8)
        self.fc_reduce = nn.Conv2d(out_ch, attn, 1, bias=False)
        self.bn = nn.BatchNorm2d(attn)
        self.act = nn.ReLU(inplace=True)
        self.fc_select = nn.Conv2d(attn, out_ch * paths, 1, bias=select_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.split:
            inputs = torch.split(x, x.shape[1] // self.paths_n, dim=1)
            feats = [path(xi) for path, xi in zip(self.paths, inputs, strict=True)]
        else:
            feats = [path(x) for path in self.paths]
        x = torch.stack(feats, dim=1)
        b, m, c, _, _ = x.shape
        s = x.sum(1).mean((2, 3), keepdim=True)
        z = self.act(self.bn(self.fc_reduce(s)))
        attn = self.fc_select(z).view(b, m, c, 1, 1)
        attn = torch.softmax(attn, dim=1)
        return (x * attn).sum(1)


class SKNetlet(nn.Module):
    """Stem conv, the SK block, and a classifier: the SK output is not the graph output."""

    def __init__(self, sk: nn.Module, channels: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.sk = sk
        self.head = nn.Linear(channels, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.sk(self.stem(x)).mean((2, 3)))


SHAPE = (8, 12, 12)


def _export_and_rewrite(module: nn.Module, input_shape: tuple[int, int, int], exporter: str):
    raw, _ = export_onnx(module, input_shape, exporter)  # type: ignore[arg-type]
    cleaned, _ = cleanup.run(raw)
    rewritten, report = sk_select.run(cleaned)
    final, _ = cleanup.run(rewritten, slim=False)
    return cleaned, final, report


def _ops(model: onnx.ModelProto) -> Counter[str]:
    return Counter(node.op_type for node in model.graph.node)


@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
@pytest.mark.parametrize("paths", [2, 3])
@pytest.mark.parametrize("split", [False, True], ids=["no-split", "split"])
def test_timm_style_sk_module(exporter: str, paths: int, split: bool) -> None:
    torch.manual_seed(paths)
    in_ch = 12 if split and paths == 3 else SHAPE[0]
    module = calibrate_bn(TimmStyleSK(in_ch, 16, paths=paths, split=split), (in_ch, *SHAPE[1:]))
    before, after, report = _export_and_rewrite(module, (in_ch, *SHAPE[1:]), exporter)

    assert [(b.branches, b.rewritten) for b in report.blocks] == [(paths, True)], report.to_dict()
    ops = _ops(after)
    assert ops["Concat"] == 0 and ops["ReduceSum"] == 0 and ops["Unsqueeze"] == 0
    assert ops["Softmax"] == (0 if paths == 2 else 1)
    if paths == 2:
        assert ops["Sigmoid"] == 1
    assert 5 not in tensor_ranks(after).values()
    assert after.graph.output[0].name == before.graph.output[0].name  # the SK output is the graph output here

    for batch in (1, 3):
        x = random_batch(batch, (in_ch, *SHAPE[1:]), seed=batch)
        old, new, ref = run(before, x), run(after, x), torch_out(module, x)
        assert new.shape == (batch, 16, *SHAPE[1:])
        assert np.abs(new - old).max() <= 1e-5
        assert np.abs(new - ref).max() <= 1e-5


@pytest.mark.parametrize("exporter", ["dynamo", "legacy"])
def test_select_conv_with_bias_is_folded_too(exporter: str) -> None:
    torch.manual_seed(7)
    module = calibrate_bn(SKNetlet(TimmStyleSK(8, 16, select_bias=True), 16), (3, 16, 16))
    with torch.no_grad():
        module.sk.fc_select.bias.normal_(0, 0.5)
    before, after, report = _export_and_rewrite(module, (3, 16, 16), exporter)
    assert len(report.rewritten) == 1 and not report.skipped
    assert _ops(after)["Softmax"] == 0
    x = random_batch(3, (3, 16, 16))
    assert np.abs(run(after, x) - run(before, x)).max() <= 1e-5
    assert np.abs(run(after, x) - torch_out(module, x)).max() <= 1e-5


# ---- hand-built graphs: one fact of the identity broken at a time ----------------------------------------


def _sk_graph(
    m: int = 2,
    c: int = 4,
    softmax_axis: int = 1,
    target: list[int] | None = None,
    weight_input: bool = False,
    sum_axis: int = 1,
    extra_stack_use: bool = False,
    attn_output: bool = False,
    spatial_attention: bool = False,
    weights_other_tensor: bool = False,
    seed: int = 0,
) -> onnx.ModelProto:
    """The exporters' SK Select graph on branch maps given as inputs U0..U{M-1} and the vector z."""
    rng = np.random.default_rng(seed)
    d = 3
    weight = rng.standard_normal((m * c, d, 1, 1)).astype(np.float32)
    size = 3 if spatial_attention else 5  # spatial: a padded 1x1 conv gives per-pixel logits (N, M*C, 3, 3)
    inputs = [helper.make_tensor_value_info(f"U{i}", TensorProto.FLOAT, ["N", c, size, size]) for i in range(m)]
    inputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, ["N", d, 1, 1]))
    inits = [
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array([sum_axis], np.int64), "sum_axes"),
        numpy_helper.from_array(np.array(target or [-1, m, c, *([3, 3] if spatial_attention else [1, 1])], np.int64),
                                "target"),
    ]
    if weights_other_tensor:  # the attention weights multiply a tensor that is not the stack
        inputs.append(helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", m, c, size, size]))
    if weight_input:
        inputs.append(helper.make_tensor_value_info("W", TensorProto.FLOAT, [m * c, d, 1, 1]))
    else:
        inits.append(numpy_helper.from_array(weight, "W"))
    nodes = [helper.make_node("Unsqueeze", [f"U{i}", "axis1"], [f"u{i}"]) for i in range(m)]
    nodes += [
        helper.make_node("Concat", [f"u{i}" for i in range(m)], ["S"], axis=1),
        helper.make_node("ReduceSum", ["S", "axis1"], ["fuse"], keepdims=0),
        helper.make_node("Conv", ["z", "W"], ["logits"], kernel_shape=[1, 1], pads=[int(spatial_attention)] * 4),
        helper.make_node("Reshape", ["logits", "target"], ["view"]),
        helper.make_node("Softmax", ["view"], ["attn"], axis=softmax_axis),
        helper.make_node("Mul", ["X" if weights_other_tensor else "S", "attn"], ["weighted"]),
        helper.make_node("ReduceSum", ["weighted", "sum_axes"], ["V"], keepdims=0),
    ]
    outputs = [
        helper.make_tensor_value_info("V", TensorProto.FLOAT, None),
        helper.make_tensor_value_info("fuse", TensorProto.FLOAT, None),
    ]
    if extra_stack_use:
        nodes.append(helper.make_node("ReduceMax", ["S", "axis1"], ["stack_max"], keepdims=0))
        outputs.append(helper.make_tensor_value_info("stack_max", TensorProto.FLOAT, None))
    if attn_output:
        outputs.append(helper.make_tensor_value_info("attn", TensorProto.FLOAT, None))
    graph = helper.make_graph(nodes, "sk", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return onnx.shape_inference.infer_shapes(model)


def _feeds(model: onnx.ModelProto, batch: int = 2) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    feeds = {}
    for value in model.graph.input:
        dims = [batch if d.dim_param else d.dim_value for d in value.type.tensor_type.shape.dim]
        feeds[value.name] = np.abs(rng.standard_normal(dims)).astype(np.float32)
    return feeds


def _run_all(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    from tests.graph.conftest import session

    return session(model).run(None, feeds)


@pytest.mark.parametrize("m", [2, 3, 4])
def test_hand_built_block_is_rewritten_exactly(m: int) -> None:
    model = _sk_graph(m=m)
    rewritten, report = sk_select.run(model)
    assert len(report.rewritten) == 1 and report.rewritten[0].branches == m
    onnx.checker.check_model(cleanup.infer_and_check(rewritten), full_check=True)
    feeds = _feeds(model)
    for old, new in zip(_run_all(model, feeds), _run_all(rewritten, feeds), strict=True):
        assert np.abs(old - new).max() <= 1e-5
    assert 5 not in tensor_ranks(rewritten).values()
    ops = _ops(rewritten)
    assert ops["Concat"] == 0 and ops["ReduceSum"] == 0 and ops["Softmax"] == (0 if m == 2 else 1)


def test_two_branch_fold_is_w0_minus_w1() -> None:
    model = _sk_graph(m=2, c=4)
    weight = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "W"))
    rewritten, _ = sk_select.run(model)
    folded = [numpy_helper.to_array(i) for i in rewritten.graph.initializer if "gate_weight" in i.name]
    assert len(folded) == 1
    np.testing.assert_array_equal(folded[0], weight[:4] - weight[4:])


@pytest.mark.parametrize(
    ("kwargs", "reason"),
    [
        ({"softmax_axis": 2}, "softmax axis is 2"),
        ({"spatial_attention": True}, "is not [N, M, C, 1, 1]"),
        ({"weights_other_tensor": True}, "multiply a tensor that is not a Concat"),
        ({"weight_input": True}, "weight is not a constant"),
        ({"sum_axis": 2}, "not summed over axis 1"),
        ({"extra_stack_use": True}, "stack is used by something besides"),
        ({"attn_output": True}, "softmax output is a graph output"),
    ],
    ids=["softmax-axis", "spatial-attention", "not-the-stack", "weight-not-constant", "sum-axis", "stack-reused",
         "attention-is-output"],
)
def test_unprovable_block_is_left_alone_and_reported(kwargs: dict, reason: str) -> None:
    model = _sk_graph(**kwargs)
    rewritten, report = sk_select.run(model)
    assert not report.rewritten
    assert len(report.skipped) == 1 and reason in report.skipped[0].reason, report.to_dict()
    assert _ops(rewritten) == _ops(model)
    feeds = _feeds(model)
    for old, new in zip(_run_all(model, feeds), _run_all(rewritten, feeds), strict=True):
        np.testing.assert_array_equal(old, new)


def test_classifier_softmax_is_not_a_candidate_block() -> None:
    graph = helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["p"], axis=-1)], "cls",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 10])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, ["N", 10])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    rewritten, report = sk_select.run(model)
    assert not report.rewritten and "not a Reshape" in report.skipped[0].reason
    assert _ops(rewritten) == {"Softmax": 1}
