"""Every model design through a bundle (the shallowest registered model of each, ``one_model_per_design``): the
cleaned graph (dynamo exporter) has a symbolic batch and no SK softmax left, and the Predictor's ort-cpu and torch
backends agree (max abs <= 1e-4, top-1 identical) at batch 1 and 8. Reduced input size (64x64) to keep the suite
quick on two cores; the legacy exporter is covered in tests/graph/test_export.py."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest

from sk_deploy.graph.describe import tensor_ranks
from sk_deploy.runtime.predictor import Predictor
from tests.bundles import BundleCache, one_model_per_design


@pytest.mark.parametrize("name", one_model_per_design())
def test_ort_cpu_and_torch_agree_on_every_design(name: str, bundles: BundleCache) -> None:
    bundle = bundles.get(name)
    cleaned = onnx.load(bundle.file("model.onnx"))
    for value in (cleaned.graph.input[0], cleaned.graph.output[0]):
        assert value.type.tensor_type.shape.dim[0].dim_param, f"{value.name} has a fixed batch"
    ops = Counter(node.op_type for node in cleaned.graph.node)
    if name.startswith("sk"):
        select = bundle.manifest["stages"]["optimize"]["sk_select"]
        assert select["rewritten"] > 0 and not select["skipped"]
        assert ops["Softmax"] == 0 and ops["Concat"] == 0 and ops["ReduceSum"] == 0
        assert 5 not in tensor_ranks(cleaned).values()

    with Predictor(bundle, "ort-cpu") as ort, Predictor(bundle, "torch") as eager:
        assert (ort.backend, ort.file, eager.backend, eager.file) == ("ort-cpu", "model.onnx", "torch", None)
        x = ort.example(8, seed=1)
        for batch in (1, 8):
            a, b = ort.predict(x[:batch]), eager.predict(x[:batch])
            assert a.shape == b.shape == (batch, 1000) and a.dtype == b.dtype == np.float32
            assert np.abs(a - b).max() <= 1e-4
            np.testing.assert_array_equal(a.argmax(1), b.argmax(1))
        assert np.abs(b).max() > 0.5, "logits should be O(1): a test on nearly-zero logits could not fail"
