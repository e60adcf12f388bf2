"""``sk-deploy serve --backend openvino`` for real on 127.0.0.1: /v1/classify on a photo and v2 infer on a batch
give what the openvino Predictor gives; the service reports the precision compiled (bf16 where the CPU computes
it natively, else f32)."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from sk_deploy.bundle import Bundle
from sk_deploy.images import load_batch
from sk_deploy.machine import detect_cpu
from sk_deploy.precisions import Precision
from sk_deploy.runtime.classify import softmax
from sk_deploy.runtime.predictor import Predictor
from tests.servers import served

pytest.importorskip("openvino", reason="OpenVINO is a default dependency; this install lacks it")
PRECISION = "fp32" if Precision.BF16.cpu_refusal(detect_cpu()) else "bf16"  # the fastest float precision this CPU has


def test_serve_openvino_answers_classify_and_v2(small_bundle: Bundle, generated_jpeg: Path) -> None:
    batch = load_batch([generated_jpeg], small_bundle.preprocess)
    with Predictor(small_bundle, "openvino", PRECISION) as predictor:
        expected_probs = softmax(predictor.predict(batch))[0]
        x = predictor.example(3, seed=8)
        expected_logits = predictor.predict(x)
    with served(small_bundle.path, "--backend", "openvino", "--precision", PRECISION) as server, \
            httpx.Client(base_url=server.url, timeout=60) as client:
        index = client.get("/").json()
        compiled = "bf16" if PRECISION == "bf16" else "f32"
        assert index["backend"] == f"openvino {PRECISION} (model.onnx; compiled {compiled})"
        answer = client.post("/v1/classify?top_k=3", content=generated_jpeg.read_bytes(),
                             headers={"Content-Type": "image/jpeg"})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert (body["backend"], body["precision"]) == ("openvino", PRECISION)
        assert [p["index"] for p in body["predictions"]] == np.argsort(-expected_probs)[:3].tolist()
        for p in body["predictions"]:
            assert p["probability"] == pytest.approx(expected_probs[p["index"]], rel=1e-3)
        request = {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                               "data": x.ravel().tolist()}]}
        response = client.post("/v2/models/skresnet18/infer", json=request)
        assert response.status_code == 200, response.text
        [out] = response.json()["outputs"]
        assert out["shape"] == [3, 1000]
        # the server batches on its own thread, so bf16 rounding may differ in the last place from a direct run
        np.testing.assert_allclose(np.array(out["data"], np.float32).reshape(3, 1000), expected_logits,
                                   atol=1e-5 if PRECISION == "fp32" else 0.05)
    assert "openvino" in server.output and "compiled" in server.output


def test_serve_openvino_bf16_where_the_cpu_lacks_it_is_one_line(small_bundle: Bundle) -> None:
    from tests.test_cli import sk_deploy

    refusal = Precision.BF16.cpu_refusal(detect_cpu())
    if refusal is None:
        pytest.skip("this CPU has native bf16: the refusal rule is tested on a given feature set in "
                    "tests/runtime/test_cpu_choice.py")
    run = sk_deploy("serve", str(small_bundle.path), "--backend", "openvino", "--precision", "bf16", "--port", "0")
    assert run.returncode == 1 and len(run.stderr.strip().splitlines()) == 1
    assert "native bfloat16" in run.stderr
