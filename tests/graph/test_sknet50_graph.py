"""SKNet-50 at full size (224x224, dynamo exporter): the cleaned graph has no Softmax, no Concat and no rank-5
tensor, has fewer nodes than onnxslim and onnxsim reach on the same raw export, and gives PyTorch's logits."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import torch

from sk_deploy.graph.describe import tensor_ranks
from sk_deploy.graph.export import export_onnx
from sk_deploy.graph.passes import optimize
from sk_deploy.models import create_model
from tests.graph.conftest import calibrate_bn, random_batch, session, torch_out

SHAPE = (3, 224, 224)


@pytest.fixture(scope="module")
def sknet50() -> tuple[torch.nn.Module, onnx.ModelProto, onnx.ModelProto, dict]:
    torch.manual_seed(0)
    model = calibrate_bn(create_model("sknet50"), SHAPE)
    raw, _ = export_onnx(model, SHAPE, "dynamo")
    cleaned, reports = optimize(raw)
    return model, raw, cleaned, reports


def test_cleaned_graph_has_no_softmax_concat_or_rank5(sknet50) -> None:
    _, raw, cleaned, reports = sknet50
    raw_ops, ops = Counter(n.op_type for n in raw.graph.node), Counter(n.op_type for n in cleaned.graph.node)
    assert raw_ops["Softmax"] == 16 and raw_ops["Concat"] == 16  # what the exporter gives: one per SK block
    assert ops["Softmax"] == 0 and ops["Concat"] == 0 and ops["ReduceSum"] == 0
    assert ops["Sigmoid"] == 16 and ops["ReduceMean"] == 0
    assert 5 not in tensor_ranks(cleaned).values()
    assert reports["sk_select"]["rewritten"] == 16 and reports["sk_select"]["skipped"] == []
    assert len(cleaned.graph.node) == 298 and len(raw.graph.node) == 346


def test_fewer_nodes_than_onnxslim(sknet50) -> None:
    import onnxslim

    _, raw, cleaned, _ = sknet50
    slimmed = onnxslim.slim(raw)
    assert Counter(n.op_type for n in slimmed.graph.node)["Softmax"] == 16  # onnxslim leaves the SK pattern
    assert len(cleaned.graph.node) < len(slimmed.graph.node)


def test_fewer_nodes_than_onnxsim(sknet50) -> None:
    onnxsim = pytest.importorskip("onnxsim")
    _, raw, cleaned, _ = sknet50
    simplified, ok = onnxsim.simplify(raw)
    assert ok
    assert Counter(n.op_type for n in simplified.graph.node)["Softmax"] == 16
    assert len(cleaned.graph.node) < len(simplified.graph.node)


def test_full_size_parity(sknet50) -> None:
    model, raw, cleaned, _ = sknet50
    x = random_batch(2, SHAPE)
    reference = torch_out(model, x)
    for graph in (raw, cleaned):
        logits = session(graph).run(None, {"input": x})[0]
        assert np.abs(logits - reference).max() <= 1e-4
        np.testing.assert_array_equal(logits.argmax(1), reference.argmax(1))
