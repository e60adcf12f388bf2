"""tritonclient's own HTTP client against a real `sk-deploy serve` process on the loopback: server and model
metadata, liveness and readiness, and infer calls (binary tensors, JSON tensors, the classification extension)
whose logits match the Predictor's on the same bundle."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from sk_deploy.bundle import Bundle
from sk_deploy.images import load_batch
from sk_deploy.labels import imagenet_labels
from sk_deploy.runtime.predictor import Predictor
from tests.servers import ServerProcess

from ..conftest import make_image


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpclient.InferenceServerClient]:
    """A tritonclient HTTP client connected to the session's `sk-deploy serve` of the small bundle (ONNX Runtime,
    CPU)."""
    triton = httpclient.InferenceServerClient(url=server.url.removeprefix("http://"), network_timeout=60.0)
    yield triton
    triton.close()


@pytest.fixture(scope="module")
def batch(small_bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """Three generated pictures through the bundle's preprocessing: float32 (3, 3, 64, 64)."""
    folder = tmp_path_factory.mktemp("pictures")
    paths = [make_image(folder / f"p{i}.jpg", size=(120, 90), seed=i) for i in range(3)]
    return load_batch(paths, small_bundle.preprocess)


@pytest.fixture(scope="module")
def expected(small_bundle: Bundle, batch: np.ndarray) -> np.ndarray:
    """The Predictor's logits on the same batch, same backend."""
    with Predictor(small_bundle.path, backend="ort-cpu") as predictor:
        return predictor.predict(batch)


def test_server_liveness_readiness_and_metadata(client: httpclient.InferenceServerClient,
                                                 small_bundle: Bundle) -> None:
    assert client.is_server_live() and client.is_server_ready()
    server = client.get_server_metadata()
    assert isinstance(server["name"], str) and server["name"] and isinstance(server["version"], str)
    name = small_bundle.model_name
    assert client.is_model_ready(name) and client.is_model_ready(name, "1")
    assert not client.is_model_ready("no-such-model")
    model = client.get_model_metadata(name)
    assert model["name"] == name and "1" in model["versions"]
    (inp,), (out,) = model["inputs"], model["outputs"]
    manifest = small_bundle.manifest
    assert (inp["name"], inp["datatype"], inp["shape"]) == (manifest["input"]["name"], "FP32", [-1, 3, 64, 64])
    assert (out["name"], out["datatype"], out["shape"]) == (manifest["output"]["name"], "FP32", [-1, 1000])
    with pytest.raises(InferenceServerException):
        client.get_model_metadata("no-such-model")


@pytest.mark.parametrize("binary", [True, False], ids=["binary-tensors", "json-tensors"])
def test_infer_matches_the_predictor(client: httpclient.InferenceServerClient, small_bundle: Bundle,
                                     batch: np.ndarray, expected: np.ndarray, binary: bool) -> None:
    manifest = small_bundle.manifest
    tensor = httpclient.InferInput(manifest["input"]["name"], list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch, binary_data=binary)
    wanted = httpclient.InferRequestedOutput(manifest["output"]["name"], binary_data=binary)
    result = client.infer(small_bundle.model_name, [tensor], outputs=[wanted], request_id="r-1")
    logits = result.as_numpy(manifest["output"]["name"])
    assert logits is not None and logits.dtype == np.float32 and logits.shape == (3, 1000)
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-5)
    response = result.get_response()
    assert response["model_name"] == small_bundle.model_name and response.get("id") == "r-1"


def test_classification_extension(client: httpclient.InferenceServerClient, small_bundle: Bundle,
                                  batch: np.ndarray, expected: np.ndarray) -> None:
    manifest = small_bundle.manifest
    tensor = httpclient.InferInput(manifest["input"]["name"], list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    wanted = httpclient.InferRequestedOutput(manifest["output"]["name"], class_count=3)
    top = client.infer(small_bundle.model_name, [tensor], outputs=[wanted]).as_numpy(manifest["output"]["name"])
    assert top is not None and top.shape == (3, 3)
    for row, logits in zip(top, expected, strict=True):
        entries = [item.decode().split(":", 2) for item in row]
        assert [int(index) for _, index, _ in entries] == list(np.argsort(-logits, kind="stable")[:3])
        assert [label for _, _, label in entries] == [imagenet_labels()[int(index)] for _, index, _ in entries]
        np.testing.assert_allclose([float(value) for value, _, _ in entries], np.sort(logits)[::-1][:3], atol=1e-4)


def test_a_wrong_input_is_refused(client: httpclient.InferenceServerClient, small_bundle: Bundle) -> None:
    tensor = httpclient.InferInput(small_bundle.manifest["input"]["name"], [1, 3, 32, 32], "FP32")
    tensor.set_data_from_numpy(np.zeros((1, 3, 32, 32), dtype=np.float32))
    with pytest.raises(InferenceServerException):
        client.infer(small_bundle.model_name, [tensor])

