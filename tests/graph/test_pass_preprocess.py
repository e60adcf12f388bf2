"""Fused preprocessing: uint8 NHWC in, the same logits out as the float model on the normalised picture."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from PIL import Image

from sk_deploy.graph.passes import cleanup, preprocess
from sk_deploy.graph.passes.preprocess import PreprocessError
from sk_deploy.images import Preprocess, resize_crop, to_tensor
from tests.graph.conftest import run


@pytest.fixture(scope="module")
def float_model(legacy_skresnet18: tuple[torch.nn.Module, onnx.ModelProto]) -> onnx.ModelProto:
    return cleanup.run(legacy_skresnet18[1])[0]


def test_fused_graph_takes_uint8_nhwc_and_matches(float_model: onnx.ModelProto) -> None:
    spec = Preprocess(resize=73, crop=64)
    fused, report = preprocess.run(float_model, spec)
    fused = cleanup.infer_and_check(fused)
    image = fused.graph.input[0]
    assert image.name == "image" and image.type.tensor_type.elem_type == TensorProto.UINT8
    dims = image.type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [64, 64, 3]
    assert report.new_input["dtype"] == "uint8" and report.old_input["dtype"] == "float32"
    assert Counter(n.op_type for n in fused.graph.node[:4]) == {"Transpose": 1, "Cast": 1, "Mul": 1, "Add": 1}
    # uint8 is cast before any other op (TensorRT converts uint8 inputs to float before other layers)
    first = fused.graph.node[0]
    assert first.op_type == "Cast" and list(first.input) == ["image"]
    assert [n for n in fused.graph.node if "image" in n.input] == [first]

    rng = np.random.default_rng(0)
    pictures = [Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8)) for _ in range(3)]
    crops = [resize_crop(p, spec) for p in pictures]
    uint8 = np.stack([np.asarray(c) for c in crops])
    floats = np.stack([to_tensor(c, spec) for c in crops])
    np.testing.assert_allclose(run(fused, uint8), run(float_model, floats), atol=1e-5, rtol=0)


def test_fusing_needs_a_float_nchw_rgb_input() -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1, 8, 8])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(PreprocessError, match=r"float32 \(N, 3, H, W\)"):
        preprocess.run(model, Preprocess())
