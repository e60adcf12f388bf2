"""Cleanup: the legacy exporter's shape chains, Identity and dead nodes go; ReduceMean over H, W becomes
GlobalAveragePool where (and only where) it is the same thing; outputs stay the same on ONNX Runtime."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from sk_deploy.graph.passes import cleanup
from tests.graph.conftest import random_batch, run, session


def _ops(model: onnx.ModelProto) -> Counter[str]:
    return Counter(node.op_type for node in model.graph.node)


def test_legacy_shape_chains_identity_and_constants_are_gone(legacy_skresnet18) -> None:
    _, raw = legacy_skresnet18
    raw_ops = _ops(raw)
    assert raw_ops["Shape"] and raw_ops["Gather"] and raw_ops["Cast"] and raw_ops["Constant"]  # what it fixes
    cleaned, report = cleanup.run(raw)
    ops = _ops(cleaned)
    for op in ("Shape", "Gather", "Cast", "Div", "Identity", "Constant", "ReduceMean"):
        assert ops[op] == 0, (op, ops)
    assert report.nodes_before == len(raw.graph.node) and report.nodes_after == len(cleaned.graph.node)
    assert report.global_pools == 8 and ops["GlobalAveragePool"] == 9  # 8 SK fuse pools + the head
    initializers = {init.name for init in cleaned.graph.initializer}
    reshapes = [node for node in cleaned.graph.node if node.op_type == "Reshape"]
    assert reshapes and all(node.input[1] in initializers for node in reshapes)  # constant targets now
    x = random_batch(3, (3, 64, 64))
    np.testing.assert_allclose(run(cleaned, x), run(raw, x), atol=1e-5, rtol=0)


def test_cleanup_keeps_a_symbolic_batch_and_passes_the_full_checker(legacy_skresnet18) -> None:
    _, raw = legacy_skresnet18
    cleaned, _ = cleanup.run(raw)
    onnx.checker.check_model(cleaned, full_check=True)
    assert cleaned.graph.input[0].type.tensor_type.shape.dim[0].dim_param
    assert cleaned.graph.output[0].type.tensor_type.shape.dim[0].dim_param
    assert len(cleaned.graph.value_info) > 0  # shape inference ran


def _reduce_mean_graph(rank: int, axes: list[int], keepdims: int) -> onnx.ModelProto:
    shape = ["N", 4, 5, 6][:rank] if rank <= 4 else ["N", 2, 4, 5, 6]
    graph = helper.make_graph(
        [
            helper.make_node("Identity", ["x"], ["x_id"]),
            helper.make_node("Relu", ["x_id"], ["dead"]),  # unused: dead code
            helper.make_node("ReduceMean", ["x_id", "axes"], ["y"], keepdims=keepdims),
        ],
        "mean", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array(axes, np.int64), "axes")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


@pytest.mark.parametrize(
    ("rank", "axes", "keepdims", "pooled"),
    [
        (4, [2, 3], 1, True),
        (4, [-2, -1], 1, True),
        (4, [3, 2], 1, True),
        (4, [2, 3], 0, False),
        (4, [1, 2], 1, False),
        (3, [1, 2], 1, False),
        (5, [3, 4], 1, False),
    ],
)
def test_reduce_mean_becomes_global_pool_only_where_equivalent(rank: int, axes: list[int], keepdims: int,
                                                               pooled: bool) -> None:
    model = _reduce_mean_graph(rank, axes, keepdims)
    cleaned, report = cleanup.run(model)
    ops = _ops(cleaned)
    assert ops["Identity"] == 0 and ops["Relu"] == 0  # identity and dead node removed
    assert (ops["GlobalAveragePool"], ops["ReduceMean"]) == ((1, 0) if pooled else (0, 1))
    assert report.global_pools == int(pooled)
    dims = [3, 4, 5, 6][:rank] if rank <= 4 else [3, 2, 4, 5, 6]
    x = np.random.default_rng(0).standard_normal(dims).astype(np.float32)
    expected = session(model).run(None, {"x": x})[0]
    np.testing.assert_allclose(session(cleaned).run(None, {"x": x})[0], expected, atol=1e-6, rtol=0)
