"""Export of every model design (the shallowest registered model of each, ``one_model_per_design``) with the legacy
exporter: a symbolic batch, ONNX Runtime at batch 1, 3 and 8, and the logits of PyTorch (max abs error <= 1e-4,
top-1 identical). Reduced input size (64x64) to keep the suite quick on two cores. The dynamo exporter (the
default) is covered for every design through bundles and the Predictor in tests/runtime/test_predictor_parity.py;
sknet50 at full size is in test_sknet50_graph.py."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from sk_deploy.graph.describe import tensor_ranks
from sk_deploy.graph.export import ExportError, check_dynamic_batch, check_opset, export_onnx, trace_batch_for
from sk_deploy.graph.passes import optimize
from sk_deploy.models import create_model, get_spec
from tests.bundles import one_model_per_design
from tests.graph.conftest import calibrate_bn, random_batch, session, torch_out

SIZE = 64


def test_trace_batch_equals_no_dimension() -> None:
    for shape in ((3, 224, 224), (3, 64, 64), (3, 160, 160), (3, 96, 128)):
        batch = trace_batch_for(shape)
        c, h, w = shape
        assert batch >= 5 and batch not in {c, *(h >> k for k in range(6)), *(w >> k for k in range(6))}
    assert trace_batch_for((3, 224, 224)) != 7  # 224 / 32 = 7: the last stage's feature map


def test_fixed_batch_is_refused() -> None:
    value = helper.make_tensor_value_info("input", TensorProto.FLOAT, [5, 3, 8, 8])
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])
    model = helper.make_model(helper.make_graph([], "g", [value], [out]))
    with pytest.raises(ExportError, match="fixed the batch dimension of input 'input' to 5"):
        check_dynamic_batch(model, 5)


@pytest.mark.parametrize("opset", [12, 16, 99])
def test_unsupported_opset_is_refused(opset: int) -> None:
    with pytest.raises(ExportError, match=f"opset {opset} is not supported"):
        check_opset(opset)


def test_unknown_exporter_is_refused() -> None:
    with pytest.raises(ExportError, match="unknown exporter 'onnx2'"):
        export_onnx(torch.nn.Identity(), (3, 8, 8), exporter="onnx2")  # type: ignore[arg-type]


def _has_sk(name: str) -> bool:
    return name.startswith("sk")


@pytest.mark.parametrize("exporter", ["legacy"])
@pytest.mark.parametrize("name", one_model_per_design())
def test_every_design_exports_cleans_and_matches_pytorch(name: str, exporter: str) -> None:
    torch.manual_seed(0)
    shape = (get_spec(name).input_size[0], SIZE, SIZE)
    model = calibrate_bn(create_model(name), shape)
    raw, info = export_onnx(model, shape, exporter)  # type: ignore[arg-type]
    cleaned, reports = optimize(raw)
    assert info.exporter == exporter and info.trace_batch not in (1, 3, 8)

    for value in (cleaned.graph.input[0], cleaned.graph.output[0]):
        assert value.type.tensor_type.shape.dim[0].dim_param, f"{value.name} has a fixed batch"
    ops = Counter(node.op_type for node in cleaned.graph.node)
    assert len(cleaned.graph.node) <= len(raw.graph.node)
    if _has_sk(name):
        assert reports["sk_select"]["rewritten"] > 0 and not reports["sk_select"]["skipped"]
        assert ops["Softmax"] == 0 and ops["Concat"] == 0 and ops["ReduceSum"] == 0
        assert 5 not in tensor_ranks(cleaned).values()

    sess = session(cleaned)
    x = random_batch(8, shape)
    reference = torch_out(model, x)  # once at batch 8; ONNX Runtime runs each batch size on its first rows
    for batch in (1, 3, 8):
        logits = sess.run(None, {"input": x[:batch]})[0]
        assert logits.shape == (batch, 1000)
        assert np.abs(logits - reference[:batch]).max() <= 1e-4
        np.testing.assert_array_equal(logits.argmax(1), reference[:batch].argmax(1))


def test_legacy_opset_17_is_supported() -> None:
    torch.manual_seed(0)
    model = calibrate_bn(create_model("skresnet18"), (3, SIZE, SIZE))
    raw, _ = export_onnx(model, (3, SIZE, SIZE), "legacy", opset=17)
    cleaned, reports = optimize(raw)
    assert next(o.version for o in cleaned.opset_import if o.domain in ("", "ai.onnx")) == 17
    assert reports["sk_select"]["rewritten"] == 8
    x = random_batch(2, (3, SIZE, SIZE))
    assert np.abs(session(cleaned).run(None, {"input": x})[0] - torch_out(model, x)).max() <= 1e-4
    onnx.checker.check_model(cleaned, full_check=True)
