"""KServe v2 over gRPC on a real `sk-deploy serve --grpc-port 0`, called with tritonclient.grpc and with the
generated stubs: health and metadata, infer with raw and typed contents equal to the Predictor's logits, the
classification extension, each refusal as its status code and message, the batcher's deadlines, queue limit and
cancellation shared with HTTP (counted in the same metrics), and the drain on SIGTERM. Beside them: the committed
stubs are what the generator writes, and their messages are Triton's, field for field.

The server batches up to 4 pictures and waits 2 s for a batch to fill, with a 1.5 s deadline: a 4-picture
request runs at once, and a 1-picture request waits in the queue until its deadline (what the queue, deadline
and cancellation tests need, without any timing of their own)."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable, Iterator
from importlib.metadata import requires, version
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tc
from google.protobuf.descriptor import Descriptor
from packaging.requirements import Requirement
from packaging.version import Version
from tritonclient.grpc import service_pb2 as triton_pb
from tritonclient.utils import InferenceServerException

from sk_deploy.bench.prometheus import parse_metrics, total
from sk_deploy.bundle import Bundle
from sk_deploy.runtime.predictor import Predictor
from sk_deploy.service.grpc_v2 import generate
from sk_deploy.service.grpc_v2 import grpc_predict_v2_pb2 as pb
from sk_deploy.service.grpc_v2 import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.conftest import REPO_ROOT
from tests.servers import ServerProcess, served

MODEL = "skresnet18"
ARGS = ("--backend", "ort-cpu", "--grpc-port", "0", "--max-batch", "4", "--max-delay-ms", "2000",
        "--max-queue", "8", "--max-body-mb", "1", "--timeout-ms", "1500")


@pytest.fixture(scope="module")
def server(small_bundle: Bundle) -> Iterator[ServerProcess]:
    """The small bundle over HTTP and gRPC (see the module's docstring for its batching)."""
    with served(small_bundle.path, *ARGS) as process:
        yield process


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[tc.InferenceServerClient]:
    """tritonclient's gRPC client on the server."""
    triton = tc.InferenceServerClient(server.grpc_target)
    yield triton
    triton.close()


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    """The generated stub on the server."""
    with grpc.insecure_channel(server.grpc_target) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def batch_and_logits(small_bundle: Bundle) -> tuple[np.ndarray, np.ndarray]:
    """Four pictures and the Predictor's logits of them on the server's backend."""
    with Predictor(small_bundle, "ort-cpu") as predictor:
        batch = predictor.example(4, seed=11)
        return batch, predictor.predict(batch)


def fp32_input(array: np.ndarray, name: str = "input", datatype: str = "FP32") -> tc.InferInput:
    """A tritonclient input carrying ``array`` as raw contents."""
    tensor = tc.InferInput(name, list(array.shape), datatype)
    tensor.set_data_from_numpy(array)
    return tensor


def metrics(server: ServerProcess) -> Callable[..., float]:
    """A scrape of /metrics: ``name, **labels`` -> the counter's total (0 when absent)."""
    samples = parse_metrics(httpx.get(f"{server.url}/metrics", timeout=10).text)
    return lambda name, **labels: total(samples, name, **labels) or 0.0


def wait_for(server: ServerProcess, condition: Callable[[Callable[..., float]], bool], what: str) -> None:
    """Scrape until ``condition`` holds of the metrics (it must within 10 s)."""
    for _ in range(200):
        if condition(metrics(server)):
            return
        time.sleep(0.05)
    raise AssertionError(f"the server's metrics never showed {what}")


def code_and_message(error: InferenceServerException) -> tuple[str, str]:
    """tritonclient's error as the status code's name and the message."""
    return str(error.status()).removeprefix("StatusCode."), error.message()


def refusal(call: Callable[[], Any]) -> tuple[str, str]:
    """The status code (its name) and message ``call`` is refused with."""
    with pytest.raises(InferenceServerException) as caught:
        call()
    return code_and_message(caught.value)


class Held:
    """A 1-picture request waiting in the server's queue (a batch of 4 fills only after 2 s; its deadline is
    1.5 s, or ``timeout`` seconds of the client's), sent from a thread; ``error`` once it has been answered."""

    def __init__(self, server: ServerProcess, client: tc.InferenceServerClient, picture: np.ndarray,
                 timeout: float | None = None) -> None:
        self.server, self.error, self.result = server, None, None
        waiting = metrics(server)("sk_queue_depth")
        self.context = client.async_infer(MODEL, [fp32_input(picture)], self._answered, client_timeout=timeout)
        self.done = threading.Event()
        wait_for(server, lambda m: m("sk_queue_depth") == waiting + 1, "the held picture in the queue")

    def _answered(self, result: Any, error: InferenceServerException | None) -> None:
        self.result, self.error = result, error
        self.done.set()


def test_committed_stubs_are_what_the_generator_writes() -> None:
    installed = version("grpcio-tools")
    if installed != generate.GRPCIO_TOOLS:
        pytest.skip(f"grpcio-tools {installed} is installed, the stubs are made with {generate.GRPCIO_TOOLS} "
                    f"(the dev extra)")
    for name, text in generate.generate().items():
        assert (generate.HERE / name).read_text(encoding="utf-8") == text, f"{name} is stale: run {generate.__name__}"


def test_the_stubs_need_the_oldest_protobuf_tritonclient_allows() -> None:
    """One environment for sk-deploy and Triton's client: the stubs' gencode is the oldest protobuf that
    tritonclient[grpc] accepts, sk-deploy asks for that one or newer, and the dev extra pins the generator's tools
    and holds tritonclient[all] (so every test run is that environment)."""
    stub = (generate.HERE / generate.STUBS[0]).read_text(encoding="utf-8")
    found = re.search(r"# Protobuf Python Version: (\S+)", stub)
    assert found, "the stub names its gencode version"
    gencode = Version(found.group(1))
    triton = [req for req in map(Requirement, requires("tritonclient") or [])
              if req.name == "protobuf" and req.marker and req.marker.evaluate({"extra": "grpc"})]
    assert len(triton) == 1 and gencode in triton[0].specifier, (gencode, triton)
    assert Version(f"{gencode.major}.{gencode.minor - 1}.99") not in triton[0].specifier, "not the oldest allowed"
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    ours = next(Requirement(r) for r in project["dependencies"] if Requirement(r).name == "protobuf")
    assert [s.version for s in ours.specifier if s.operator == ">="] == [str(gencode)]
    assert Version(version("protobuf")) in ours.specifier
    dev = project["optional-dependencies"]["dev"]
    assert f"grpcio-tools=={generate.GRPCIO_TOOLS}" in dev and "tritonclient[all]==2.73.0" in dev


def _fields(message: Descriptor) -> dict[str, tuple[int, int, str | None]]:
    return {f.name: (f.number, f.type, f.message_type.full_name if f.message_type else None) for f in message.fields}


def test_the_messages_are_tritons_field_for_field() -> None:
    ours, theirs = pb.DESCRIPTOR, triton_pb.DESCRIPTOR
    methods = ours.services_by_name["GRPCInferenceService"].methods
    assert [m.name for m in methods] == ["ServerLive", "ServerReady", "ModelReady", "ServerMetadata",
                                         "ModelMetadata", "ModelInfer"]
    pending = [m.input_type for m in methods] + [m.output_type for m in methods]
    checked = set()
    while pending:
        message = pending.pop()
        if message.full_name in checked:
            continue
        checked.add(message.full_name)
        triton = theirs.pool.FindMessageTypeByName(message.full_name)
        mine = {k: v for k, v in _fields(message).items() if message.full_name != "inference.ModelMetadataResponse"
                or k != "properties"}  # the one field Triton lacks: unused, and a client skips it
        assert mine == _fields(triton), message.full_name
        pending += [f.message_type for f in message.fields if f.message_type and f.name != "properties"]
    assert {"inference.InferTensorContents", "inference.InferParameter",
            "inference.ModelInferRequest.InferInputTensor"} <= checked


def test_health_and_metadata(client: tc.InferenceServerClient, small_bundle: Bundle) -> None:
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready(MODEL) and client.is_model_ready(MODEL, "1")
    assert not client.is_model_ready("no-such-model") and not client.is_model_ready(MODEL, "2")
    server = client.get_server_metadata(as_json=True)
    assert server["name"] == "sk-deploy" and set(server["extensions"]) == {"binary_tensor_data", "classification"}
    model = client.get_model_metadata(MODEL, as_json=True)
    assert (model["name"], model["versions"], model["platform"]) == (MODEL, ["1"], "sk-deploy_ort-cpu")
    assert model["inputs"] == [{"name": small_bundle.manifest["input"]["name"], "datatype": "FP32",
                                "shape": ["-1", "3", "64", "64"]}]  # int64 as JSON strings, protobuf's way
    assert model["outputs"] == [{"name": "logits", "datatype": "FP32", "shape": ["-1", "1000"]}]
    assert refusal(lambda: client.get_model_metadata("no-such-model")) == (
        "NOT_FOUND", "unknown model 'no-such-model'; this server serves 'skresnet18'")


def test_raw_infer_equals_the_predictor_and_counts_like_http(server: ServerProcess, client: tc.InferenceServerClient,
                                                             batch_and_logits: tuple) -> None:
    batch, expected = batch_and_logits
    before = metrics(server)
    result = client.infer(MODEL, [fp32_input(batch)], request_id="r7")
    after = metrics(server)
    logits = result.as_numpy("logits")
    assert logits.shape == (4, 1000) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    response = result.get_response()
    assert (response.id, response.model_name, response.model_version) == ("r7", MODEL, "1")
    assert len(response.raw_output_contents) == 1 and not response.outputs[0].HasField("contents")
    endpoint = "/inference.GRPCInferenceService/ModelInfer"
    for name, labels, grew in [("nv_inference_request_success", {}, 1), ("nv_inference_count", {}, 4),
                               ("nv_inference_exec_count", {}, 1),
                               ("sk_requests", {"endpoint": endpoint, "status": "200"}, 1)]:
        assert after(name, **labels) - before(name, **labels) == grew, name


def test_typed_contents_through_the_generated_stub(stub: pb_grpc.GRPCInferenceServiceStub,
                                                   batch_and_logits: tuple) -> None:
    batch, expected = batch_and_logits
    request = pb.ModelInferRequest(model_name=MODEL, model_version="1")
    request.inputs.add(name="input", datatype="FP32", shape=batch.shape).contents.fp32_contents.extend(batch.ravel())
    request.outputs.add(name="logits")
    response = stub.ModelInfer(request, timeout=30)
    [out] = response.outputs
    assert (out.name, out.datatype, list(out.shape)) == ("logits", "FP32", [4, 1000])
    logits = np.frombuffer(response.raw_output_contents[0], dtype="<f4").reshape(4, 1000)
    np.testing.assert_allclose(logits, expected, atol=1e-5)


def test_the_classification_extension_is_the_top_k(client: tc.InferenceServerClient,
                                                   batch_and_logits: tuple) -> None:
    batch, expected = batch_and_logits
    result = client.infer(MODEL, [fp32_input(batch)], outputs=[tc.InferRequestedOutput("logits", class_count=3)])
    top = result.as_numpy("logits")
    assert top.shape == (4, 3) and result.get_output("logits").datatype == "BYTES"
    entries = [[item.decode().split(":", 2) for item in row] for row in top]
    assert [[int(index) for _, index, _ in row] for row in entries] == np.argsort(-expected, 1)[:, :3].tolist()
    values = np.array([[float(value) for value, _, _ in row] for row in entries])
    np.testing.assert_allclose(values, np.sort(expected, 1)[:, ::-1][:, :3], atol=1e-5)
    assert all(label for row in entries for _, _, label in row)


BAD = np.zeros((1, 3, 64, 64), np.float32)
NAN = BAD.copy()
NAN[0, 1, 2, 3] = np.nan


@pytest.mark.parametrize(("case", "inputs", "kwargs", "code", "message"), [
    ("wrong shape", [fp32_input(np.zeros((1, 3, 32, 32), np.float32))], {}, "INVALID_ARGUMENT",
     "input 'input': expected FP32 [-1, 3, 64, 64], got FP32 [1, 3, 32, 32]"),
    ("wrong datatype", [fp32_input(BAD.astype(np.float64), datatype="FP64")], {}, "INVALID_ARGUMENT",
     "input 'input': expected FP32 [-1, 3, 64, 64], got FP64 [1, 3, 64, 64]"),
    ("unknown input", [fp32_input(BAD, name="pixels")], {}, "INVALID_ARGUMENT",
     "the model takes one input, 'input' FP32 [-1, 3, 64, 64]; got 'pixels'"),
    ("unknown output", [fp32_input(BAD)], {"outputs": [tc.InferRequestedOutput("probs")]}, "INVALID_ARGUMENT",
     "unknown output 'probs'; the model's output is 'logits'"),
    ("NaN", [fp32_input(NAN)], {}, "INVALID_ARGUMENT", "inputs[0] ('input'): 1 values are not finite"),
    ("unknown model", [fp32_input(BAD)], {"model_name": "resnet50"}, "NOT_FOUND",
     "unknown model 'resnet50'; this server serves 'skresnet18'"),
    ("unknown version", [fp32_input(BAD)], {"model_version": "3"}, "NOT_FOUND",
     "unknown version '3' of 'skresnet18'; it has version 1"),
    ("over the size limit", [fp32_input(np.zeros((24, 3, 64, 64), np.float32))], {}, "RESOURCE_EXHAUSTED",
     "larger than max (1179"),
    ("more pictures than the queue", [fp32_input(np.zeros((12, 3, 64, 64), np.float32))], {}, "RESOURCE_EXHAUSTED",
     "12 pictures in one request, more than the queue holds (8"),
])
def test_a_malformed_request_is_refused_with_its_code(client: tc.InferenceServerClient, case: str, inputs: list,
                                                      kwargs: dict, code: str, message: str) -> None:
    call = {"model_name": MODEL, "inputs": inputs, **kwargs}
    got_code, got_message = refusal(lambda: client.infer(**call))
    assert got_code == code, got_message
    assert message in got_message and "\n" not in got_message


def test_typed_contents_must_fit(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    def refused(build: Callable[[pb.ModelInferRequest], None]) -> tuple[grpc.StatusCode, str]:
        request = pb.ModelInferRequest(model_name=MODEL)
        build(request)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, timeout=30)
        return caught.value.code(), caught.value.details()

    def tensor(request: pb.ModelInferRequest) -> pb.ModelInferRequest.InferInputTensor:
        return request.inputs.add(name="input", datatype="FP32", shape=[1, 3, 64, 64])

    assert refused(lambda r: tensor(r).contents.fp32_contents.extend([0.5] * 7)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "input 'input': 7 values in contents.fp32_contents for shape "
                                          "[1, 3, 64, 64] (12288 expected)")
    assert refused(lambda r: tensor(r).contents.int_contents.extend([1] * 12288)) == (
        grpc.StatusCode.INVALID_ARGUMENT, "input 'input': FP32 values go in contents.fp32_contents, got "
                                          "contents.int_contents")
    assert refused(lambda r: (tensor(r), r.raw_input_contents.append(bytes(100)))) == (
        grpc.StatusCode.INVALID_ARGUMENT, "input 'input': 100 bytes of raw_input_contents for FP32 [1, 3, 64, 64] "
                                          "(49152 expected)")


def test_the_servers_deadline_is_deadline_exceeded(server: ServerProcess, client: tc.InferenceServerClient,
                                                   batch_and_logits: tuple) -> None:
    held = Held(server, client, batch_and_logits[0][:1])
    assert held.done.wait(30) and held.error is not None
    code, message = code_and_message(held.error)
    assert code == "DEADLINE_EXCEEDED" and re.fullmatch(r"no result within the request's deadline \((\d+) ms\)",
                                                        message), message
    assert 1000 <= int(message.split("(")[1].split()[0]) <= 1500  # --timeout-ms, less what parsing took
    wait_for(server, lambda m: m("sk_queue_depth") == 0, "the expired picture dropped")


def test_a_client_deadline_drops_the_request_before_inference(server: ServerProcess,
                                                              client: tc.InferenceServerClient,
                                                              batch_and_logits: tuple) -> None:
    before = metrics(server)
    held = Held(server, client, batch_and_logits[0][:1], timeout=0.3)
    assert held.done.wait(30) and held.error is not None
    assert code_and_message(held.error)[0] == "DEADLINE_EXCEEDED"
    wait_for(server, lambda m: m("sk_queue_depth") == 0, "the expired picture dropped")
    after = metrics(server)
    assert after("nv_inference_count") == before("nv_inference_count")  # its batch never ran
    dropped = sum(after("sk_rejected_requests", reason=r) - before("sk_rejected_requests", reason=r)
                  for r in ("deadline", "cancelled"))
    assert dropped == 1 and after("nv_inference_request_failure") - before("nv_inference_request_failure") == 1


def test_a_cancelled_call_leaves_the_queue(server: ServerProcess, client: tc.InferenceServerClient,
                                           batch_and_logits: tuple) -> None:
    before = metrics(server)
    held = Held(server, client, batch_and_logits[0][:1])
    held.context.cancel()
    wait_for(server, lambda m: m("sk_rejected_requests", reason="cancelled")
             == before("sk_rejected_requests", reason="cancelled") + 1, "the cancelled picture skipped")
    after = metrics(server)
    assert after("sk_queue_depth") == 0 and after("nv_inference_count") == before("nv_inference_count")
    assert after("sk_requests", endpoint="/inference.GRPCInferenceService/ModelInfer", status="499") \
        == before("sk_requests", endpoint="/inference.GRPCInferenceService/ModelInfer", status="499") + 1


def test_a_full_queue_is_resource_exhausted_with_retry_after(server: ServerProcess, client: tc.InferenceServerClient,
                                                              stub: pb_grpc.GRPCInferenceServiceStub,
                                                              batch_and_logits: tuple) -> None:
    before = metrics(server)
    held = Held(server, client, batch_and_logits[0][:1])  # 1 of the queue's 8 pictures taken
    request = pb.ModelInferRequest(model_name=MODEL)
    request.inputs.add(name="input", datatype="FP32", shape=[8, 3, 64, 64])
    request.raw_input_contents.append(np.zeros((8, 3, 64, 64), np.float32).tobytes())
    with pytest.raises(grpc.RpcError) as caught:
        stub.ModelInfer(request, timeout=30)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert caught.value.details().startswith("the queue is full (1 pictures waiting, the limit is 8)")
    assert int(dict(caught.value.trailing_metadata())["retry-after"]) >= 1
    assert held.done.wait(30) and code_and_message(held.error)[0] == "DEADLINE_EXCEEDED"  # its own deadline
    wait_for(server, lambda m: m("sk_queue_depth") == 0, "the held picture dropped")
    # refused whole: no piece of the 8 (two batches of 4) was queued, so none filled a batch or ran
    assert metrics(server)("nv_inference_count") == before("nv_inference_count")


def test_a_busy_grpc_port_fails_before_loading(small_bundle: Bundle) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "sk_deploy", "serve", str(small_bundle.path), "--port", "0",
                               "--grpc-port", str(port)], capture_output=True, text=True, timeout=10)
    assert done.returncode == 1 and "preparing" not in done.stderr
    assert done.stderr.strip() == f"error: cannot listen for gRPC on 127.0.0.1:{port}: Address already in use"


def test_sigterm_drains_grpc_with_http_and_finishes_calls_in_flight(small_bundle: Bundle,
                                                                    batch_and_logits: tuple) -> None:
    """Its own server: a picture waits 3.5 s for its batch, longer than the 2 s drain, so it is in flight
    through the drain and uvicorn's shutdown; during the drain new calls are UNAVAILABLE."""
    batch, expected = batch_and_logits
    with served(small_bundle.path, "--backend", "ort-cpu", "--grpc-port", "0", "--max-batch", "4",
                "--max-delay-ms", "3500", "--drain-ms", "2000") as server:
        client = tc.InferenceServerClient(server.grpc_target)
        held = Held(server, client, batch[:1])
        server.process.terminate()
        for _ in range(100):
            if not client.is_server_ready():
                break
            time.sleep(0.02)
        assert client.is_server_live() and not client.is_server_ready() and not client.is_model_ready(MODEL)
        assert refusal(lambda: client.infer(MODEL, [fp32_input(batch)])) == (
            "UNAVAILABLE", "the server is shutting down")
        assert held.done.wait(30) and held.error is None, held.error
        np.testing.assert_allclose(held.result.as_numpy("logits"), expected[:1], atol=1e-5)
        assert server.process.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once it stopped
        client.close()
    assert "stopped: skresnet18" in server.output and "Application shutdown complete" in server.output
