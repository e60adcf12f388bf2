"""A real Triton Inference Server serving `sk-deploy triton-repo` output, driven by tritonclient over HTTP and gRPC.

The server is `tritonserver` from PyPI's nvidia-pytriton wheel (Triton 2.51 on the CPU; tests/deploy/tritonserver.py
says how it runs). That wheel ships Triton's Python backend only: **no onnxruntime, openvino or tensorrt backend
library**. So the `--backend python` model and the `--ensemble` (encoded pictures in) are served and checked end to
end, while the onnxruntime, openvino and tensorrt repositories are loaded by the same server up to the backend
library: Triton reads their config.pbtxt and stops where it looks for the backend's library. One server for the
module, on skresnet18 (random weights, 64x64) from the shared bundle fixture.
"""

from __future__ import annotations

import json
import re
import shutil
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException
from typer.testing import CliRunner

from sk_deploy.bundle import Bundle
from sk_deploy.cli import app
from sk_deploy.images import load_batch
from sk_deploy.labels import imagenet_labels
from sk_deploy.runtime.predictor import Predictor

from ..conftest import make_image
from .server import ready_status
from .tritonserver import TritonServer, server_files, tritonserver

MODEL = "sk18"
PREPROCESS, ENSEMBLE = f"{MODEL}_preprocess", f"{MODEL}_ensemble"
NOT_IN_WHEEL = ("onnxruntime", "openvino", "tensorrt")
QUEUE_DELAY_MS = "50"  # long enough that a burst of requests is batched, whatever the machine's load
runner = CliRunner()


def triton_repo(*args: str) -> str:
    result = runner.invoke(app, ["triton-repo", *args])
    assert result.exit_code == 0, result.output
    return result.output


def engine_bundle(bundle: Bundle, folder: Path) -> Path:
    """A copy of ``bundle`` with a recorded fp16 TensorRT plan (a stand-in file: no GPU here, and Triton stops at
    the missing tensorrt backend before it would read the plan)."""
    path = folder / "with-engine"
    shutil.copytree(bundle.path, path)
    copy = Bundle.open(path)
    name = "model.fp16.h100-80gb-hbm3.trt10.8.plan"
    (path / name).write_bytes(b"stand-in serialized engine " * 100)
    copy.add_file(name, role="engine", precision="fp16",
                  source={"file": "model.onnx", "sha256": copy.entry("model.onnx")["sha256"]},
                  tensorrt={"version": "10.8.0.43"},
                  gpu={"name": "NVIDIA H100 80GB HBM3", "compute_capability": [9, 0]},
                  hardware_compat="none", profile={"input": "input", "min": 1, "opt": 8, "max": 16})
    copy.save()
    return path


@pytest.fixture(scope="session")
def cache(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the wheel is installed once: pytest's cache (a temporary folder under -p no:cacheprovider)."""
    config_cache = getattr(request.config, "cache", None)
    return config_cache.mkdir("tritonserver") if config_cache else tmp_path_factory.mktemp("tritonserver-cache")


@pytest.fixture(scope="session", autouse=True)  # session: set up before the session's bundles
def wheel(cache: Path) -> Path:
    """The nvidia-pytriton wheel's files, or a skip saying why it cannot run here (first: before any bundle is
    made)."""
    return server_files(cache)


@pytest.fixture(scope="module")
def repository(small_bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Python-backend model with its ensemble, and the onnxruntime, openvino and tensorrt models, in one
    repository."""
    folder = tmp_path_factory.mktemp("triton-repository")
    repo = folder / "models"
    bundle = str(small_bundle.path)
    triton_repo(bundle, "--out", str(repo), "--backend", "python", "--ensemble", "--name", MODEL,
                "--max-queue-delay-ms", QUEUE_DELAY_MS)
    triton_repo(bundle, "--out", str(repo), "--backend", "onnxruntime", "--instance-kind", "cpu", "--name",
                f"{MODEL}-onnxruntime")
    triton_repo(bundle, "--out", str(repo), "--backend", "openvino", "--name", f"{MODEL}-openvino")
    triton_repo(str(engine_bundle(small_bundle, folder)), "--out", str(repo), "--backend", "tensorrt",
                "--precision", "fp16", "--name", f"{MODEL}-tensorrt")
    return repo


@pytest.fixture(scope="module")
def server(wheel: Path, repository: Path, cache: Path) -> Iterator[TritonServer]:
    """tritonserver on the repository, the Python model and the ensemble loaded; stopped after the module."""
    with tritonserver(wheel, repository, [MODEL, PREPROCESS, ENSEMBLE], cache) as running:
        yield running


@pytest.fixture(scope="module")
def http(server: TritonServer) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(server.http_url, network_timeout=120.0, concurrency=16)
    yield client
    client.close()


@pytest.fixture(scope="module")
def grpc(server: TritonServer) -> Iterator[Any]:
    try:
        import tritonclient.grpc as grpcclient
    except Exception as exc:  # protobuf's runtime refusing the generated code is a VersionError, no ImportError
        pytest.skip(f"tritonclient.grpc cannot be imported beside this environment's protobuf: {exc}")
    client = grpcclient.InferenceServerClient(server.grpc_url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def batch(small_bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """Three generated pictures through the bundle's preprocessing: float32 (3, 3, 64, 64)."""
    folder = tmp_path_factory.mktemp("pictures")
    return load_batch([make_image(folder / f"p{i}.jpg", size=(120, 90), seed=i) for i in range(3)],
                      small_bundle.preprocess)


@pytest.fixture(scope="module")
def predictor(small_bundle: Bundle) -> Iterator[Predictor]:
    """What the Python model runs inside Triton: the Predictor on the same bundle, ``auto`` on this machine."""
    with Predictor(small_bundle.path, "auto") as opened:
        yield opened


def photos(shared_data: Path, count: int = 4) -> list[Path]:
    return sorted((shared_data / "imagenet-samples").glob("*.JPEG"))[:count]


def client_for(protocol: str, request: pytest.FixtureRequest) -> tuple[Any, Any]:
    """The client of ``protocol`` and its module (tritonclient.http or tritonclient.grpc)."""
    if protocol == "http":
        return request.getfixturevalue("http"), httpclient
    client = request.getfixturevalue("grpc")
    import tritonclient.grpc as grpcclient

    return client, grpcclient


def metric(server: TritonServer, name: str, model: str) -> float:
    """One counter of Triton's Prometheus metrics for ``model`` version 1."""
    with urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10) as response:
        text = response.read().decode()
    match = re.search(rf'^{name}{{model="{re.escape(model)}",version="1"}} (\S+)$', text, re.MULTILINE)
    assert match, f"{name} for {model} not in the metrics"
    return float(match.group(1))


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_python_model_logits_equal_the_predictors(request: pytest.FixtureRequest, protocol: str,
                                                  small_bundle: Bundle, batch: np.ndarray,
                                                  predictor: Predictor) -> None:
    client, module = client_for(protocol, request)
    metadata = client.get_model_metadata(MODEL)
    assert metadata is not None
    tensor = module.InferInput(small_bundle.input_name, list(batch.shape), "FP32")
    tensor.set_data_from_numpy(batch)
    result = client.infer(MODEL, [tensor], outputs=[module.InferRequestedOutput(small_bundle.output_name)])
    logits = result.as_numpy(small_bundle.output_name)
    assert logits.dtype == np.float32 and logits.shape == (3, 1000)
    np.testing.assert_allclose(logits, predictor.predict(batch), rtol=0, atol=1e-4)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_ensemble_top_k_on_real_photos_equals_predict(request: pytest.FixtureRequest, protocol: str,
                                                      small_bundle: Bundle, shared_data: Path) -> None:
    pictures = photos(shared_data)
    predicted = runner.invoke(app, ["predict", *map(str, pictures), "--bundle", str(small_bundle.path), "--json",
                                    "--top-k", "5"])
    assert predicted.exit_code == 0, predicted.output
    expected = [[p["index"] for p in item["predictions"]] for item in json.loads(predicted.stdout)]
    client, module = client_for(protocol, request)
    encoded = np.array([[path.read_bytes()] for path in pictures], dtype=np.object_)
    tensor = module.InferInput("image", [len(pictures), 1], "BYTES")
    tensor.set_data_from_numpy(encoded)
    wanted = module.InferRequestedOutput(small_bundle.output_name, class_count=5)
    top = client.infer(ENSEMBLE, [tensor], outputs=[wanted]).as_numpy(small_bundle.output_name)
    assert top.shape == (len(pictures), 5)
    got = [[int(item.decode().split(":")[1]) for item in row] for row in top]
    assert got == expected
    labels = imagenet_labels()
    assert [[item.decode().split(":", 2)[2] for item in row] for row in top] == [[labels[i] for i in row]
                                                                                  for row in expected]


def test_a_corrupt_picture_fails_its_request_only(http: httpclient.InferenceServerClient, server: TritonServer,
                                                  small_bundle: Bundle, real_photo: Path) -> None:
    def request(pictures: list[bytes]) -> Any:
        tensor = httpclient.InferInput("image", [len(pictures), 1], "BYTES")
        tensor.set_data_from_numpy(np.array([[p] for p in pictures], dtype=np.object_))
        return http.async_infer(ENSEMBLE, [tensor])

    photo = real_photo.read_bytes()
    # sent together, so the decoding step's dynamic batcher may well hand them over in one execute
    corrupt, truncated, good = request([photo, b"not a picture"]), request([photo[:2000]]), request([photo])
    with pytest.raises(InferenceServerException, match="picture 2 of 2: not an image") as refused:
        corrupt.get_result()
    assert refused.value.status() == "400"  # the client's error (Triton's INVALID_ARG), not the server's
    with pytest.raises(InferenceServerException, match="the picture: cannot decode image") as refused:
        truncated.get_result()
    assert refused.value.status() == "400"
    assert good.get_result().as_numpy(small_bundle.output_name).shape == (1, 1000)
    again = request([photo, photo]).get_result().as_numpy(small_bundle.output_name)  # still serving
    assert again.shape == (2, 1000) and server.process.poll() is None
    assert ready_status(server.http_port, path="/v2/health/ready") == 200


def test_metrics_show_the_batches_triton_formed(http: httpclient.InferenceServerClient, server: TritonServer,
                                                small_bundle: Bundle, batch: np.ndarray) -> None:
    counters = ("nv_inference_request_success", "nv_inference_count", "nv_inference_exec_count")
    before = {name: metric(server, name, MODEL) for name in counters}
    requests = 12
    pending = []
    for i in range(requests):  # one picture each, all in flight at once
        tensor = httpclient.InferInput(small_bundle.input_name, [1, *batch.shape[1:]], "FP32")
        tensor.set_data_from_numpy(batch[i % len(batch)][None])
        pending.append(http.async_infer(MODEL, [tensor]))
    for call in pending:
        assert call.get_result().as_numpy(small_bundle.output_name).shape == (1, 1000)
    deadline = time.monotonic() + 30  # Triton counts a request once it releases it, a moment after its response
    while True:
        grown = {name: metric(server, name, MODEL) - before[name] for name in counters}
        if grown["nv_inference_request_success"] >= requests or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    print(f"{requests} requests: {grown}")
    assert grown["nv_inference_request_success"] == grown["nv_inference_count"] == requests
    assert 1 <= grown["nv_inference_exec_count"] < requests  # fewer model executions than requests: batches


@pytest.mark.parametrize("backend", NOT_IN_WHEEL)
def test_other_backends_load_up_to_their_library(http: httpclient.InferenceServerClient, backend: str) -> None:
    """The wheel has no onnxruntime, openvino or tensorrt backend: Triton parses the repository's config and
    stops at the backend library it cannot find."""
    name = f"{MODEL}-{backend}"
    with pytest.raises(InferenceServerException) as refused:
        http.load_model(name)
    assert f"unable to find backend library for backend '{backend}'" in str(refused.value)
    (entry,) = [model for model in http.get_model_repository_index() if model["name"] == name]
    assert entry["state"] == "UNAVAILABLE" and backend in entry["reason"]
    assert http.is_model_ready(MODEL)  # the others are still served
