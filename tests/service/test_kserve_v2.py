"""The KServe / Triton v2 protocol on a real server: metadata, health, and infer with JSON tensors and with the
binary tensor extension, whose logits equal the Predictor's on the same batch; Triton's classification
extension."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest

from sk_deploy.bundle import Bundle
from sk_deploy.runtime.predictor import Predictor
from sk_deploy.service.kserve import HEADER_LENGTH, ProtocolError, parse_infer

MODEL = "/v2/models/skresnet18"


@pytest.fixture(scope="module")
def batch_and_logits(small_bundle: Bundle) -> tuple[np.ndarray, np.ndarray]:
    with Predictor(small_bundle, "ort-cpu") as predictor:
        batch = predictor.example(3, seed=7)
        return batch, predictor.predict(batch)


def test_server_and_model_metadata(client: httpx.Client) -> None:
    server = client.get("/v2").json()
    assert server["name"] == "sk-deploy" and "binary_tensor_data" in server["extensions"]
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    assert client.get(f"{MODEL}/ready").status_code == 200
    assert client.get(f"{MODEL}/versions/1/ready").status_code == 200
    meta = client.get(MODEL).json()
    assert meta["name"] == "skresnet18" and meta["versions"] == ["1"]
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 3, 64, 64]}]
    assert meta["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": [-1, 1000]}]


def test_json_infer_matches_the_predictor(client: httpx.Client, batch_and_logits: tuple) -> None:
    batch, expected = batch_and_logits
    request = {"id": "r1", "inputs": [{"name": "input", "shape": list(batch.shape), "datatype": "FP32",
                                       "data": batch.ravel().tolist()}]}
    response = client.post(f"{MODEL}/infer", json=request)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["model_name"] == "skresnet18" and answer["id"] == "r1"
    [out] = answer["outputs"]
    assert (out["name"], out["datatype"], out["shape"]) == ("logits", "FP32", [3, 1000])
    np.testing.assert_allclose(np.array(out["data"], np.float32).reshape(3, 1000), expected, atol=1e-5)


def test_binary_infer_matches_the_predictor(client: httpx.Client, batch_and_logits: tuple) -> None:
    batch, expected = batch_and_logits
    header = json.dumps({"inputs": [{"name": "input", "shape": list(batch.shape), "datatype": "FP32",
                                     "parameters": {"binary_data_size": batch.nbytes}}],
                         "outputs": [{"name": "logits", "parameters": {"binary_data": True}}]}).encode()
    response = client.post(f"{MODEL}/versions/1/infer", content=header + batch.tobytes(),
                           headers={HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream"})
    assert response.status_code == 200, response.text
    length = int(response.headers[HEADER_LENGTH])
    [out] = json.loads(response.content[:length])["outputs"]
    assert out["parameters"]["binary_data_size"] == 3 * 1000 * 4
    logits = np.frombuffer(response.content[length:], dtype="<f4").reshape(out["shape"])
    np.testing.assert_allclose(logits, expected, atol=1e-5)


def test_classification_extension(client: httpx.Client, batch_and_logits: tuple) -> None:
    batch, expected = batch_and_logits
    request = {"inputs": [{"name": "input", "shape": list(batch.shape), "datatype": "FP32",
                           "data": batch.ravel().tolist()}],
               "outputs": [{"name": "logits", "parameters": {"classification": 2}}]}
    [out] = client.post(f"{MODEL}/infer", json=request).json()["outputs"]
    assert out["datatype"] == "BYTES" and out["shape"] == [3, 2]
    best = [int(item.split(":")[1]) for item in out["data"][::2]]
    assert best == expected.argmax(1).tolist()
    value, _, label = out["data"][0].split(":", 2)
    assert float(value) == pytest.approx(expected[0].max(), abs=1e-5) and label


def test_parse_refuses_unclaimed_or_missing_binary_data() -> None:
    header = json.dumps({"inputs": [{"name": "input", "shape": [2], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 8}}]}).encode()
    parsed = parse_infer(header + np.array([1.5, -2], "<f4").tobytes(), len(header))
    np.testing.assert_array_equal(parsed.inputs["input"][1], [1.5, -2])
    with pytest.raises(ProtocolError, match="4 bytes of binary data follow"):
        parse_infer(header + bytes(12), len(header))
    with pytest.raises(ProtocolError, match="8 bytes of binary data announced, 4 sent"):
        parse_infer(header + bytes(4), len(header))
    with pytest.raises(ProtocolError, match="Inference-Header-Content-Length is 999"):
        parse_infer(header, 999)
