"""The malformed-request corpus: what a careful attacker would send, to every route of a real server. Each
request gets its status and a JSON body whose message names the problem; a good picture is classified after
each one; only good pictures (and the one finite-but-huge tensor answered 422) reach the model; the server
never logs a traceback."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.servers import ServerProcess
from tests.service.test_errors import inferences, png_bytes

JPEG = {"Content-Type": "image/jpeg"}
PNG = {"Content-Type": "image/png"}
JSON = {"Content-Type": "application/json"}
V2 = "/v2/models/skresnet18/infer"
VALUES = 3 * 64 * 64


def tensor(**changes: object) -> dict[str, object]:
    """A well-formed FP32 [1, 3, 64, 64] input tensor with ``changes``."""
    return {"name": "input", "shape": [1, 3, 64, 64], "datatype": "FP32", "data": [0.0] * VALUES, **changes}


def binary(header: dict[str, object], data: bytes, length: str | bytes | None = None) -> dict[str, object]:
    """httpx arguments of a binary-extension request (the header's length, or ``length`` as sent)."""
    encoded = json.dumps(header).encode()
    return {"content": encoded + data, "headers": {"Inference-Header-Content-Length": length or str(len(encoded)),
                                                   "Content-Type": "application/octet-stream"}}


def chunks(data: bytes, size: int = 65536) -> Iterator[bytes]:
    """``data`` as a chunked body (no Content-Length: the limit must hold as it streams)."""
    for i in range(0, len(data), size):
        yield data[i:i + size]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def corpus(photo: bytes) -> list[tuple[str, str, str, dict, int, str]]:
    """(name, method, url, httpx arguments, expected status, words the message must contain)."""
    tiny = png_bytes(2, 2)
    deep = b"[" * 100_000 + b"]" * 100_000
    huge = b"\xff" * (1024 * 1024 + 1)
    fp32 = bytes(VALUES * 4)
    bin_input = {"name": "input", "shape": [1, 3, 64, 64], "datatype": "FP32",
                 "parameters": {"binary_data_size": VALUES * 4}}
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64)).save(buffer, format="JPEG")
    return [
        # /v1/classify: the picture itself
        ("empty raw body", "POST", "/v1/classify", {"content": b"", "headers": JPEG}, 400, "empty"),
        ("text, not an image", "POST", "/v1/classify", {"content": b"hello " * 40, "headers": JPEG}, 400,
         "not an image"),
        ("truncated JPEG", "POST", "/v1/classify", {"content": photo[: len(photo) // 3], "headers": JPEG}, 400,
         "truncated"),
        ("JPEG header only", "POST", "/v1/classify", {"content": buffer.getvalue()[:200], "headers": JPEG}, 400,
         "image"),
        ("decompression bomb", "POST", "/v1/classify", {"content": png_bytes(2000, 2000), "headers": PNG}, 400,
         "--max-pixels"),
        ("1x4000 PNG", "POST", "/v1/classify", {"content": png_bytes(1, 4000), "headers": PNG}, 400,
         "--max-aspect-ratio"),
        ("4000x1 PNG", "POST", "/v1/classify", {"content": png_bytes(4000, 1), "headers": PNG}, 400,
         "aspect ratio"),
        ("body over the limit, declared", "POST", "/v1/classify", {"content": huge, "headers": JPEG}, 413,
         "--max-body-mb"),
        ("body over the limit, chunked", "POST", "/v1/classify", {"content": chunks(huge), "headers": JPEG}, 413,
         "--max-body-mb"),
        ("text/plain", "POST", "/v1/classify", {"content": photo, "headers": {"Content-Type": "text/plain"}}, 415,
         "Content-Type"),
        ("no Content-Type", "POST", "/v1/classify", {"content": photo}, 415, "Content-Type"),
        ("form-urlencoded", "POST", "/v1/classify", {"data": {"file": "x"}}, 415, "Content-Type"),
        # /v1/classify: JSON
        ("base64 not base64", "POST", "/v1/classify", {"json": {"image": "%%%"}}, 400, "base64"),
        ("image a number", "POST", "/v1/classify", {"json": {"image": 5}}, 400, "image: Input should be a valid "
                                                                                 "string"),
        ("image null", "POST", "/v1/classify", {"json": {"image": None}}, 400, "image"),
        ("image missing", "POST", "/v1/classify", {"json": {"picture": b64(photo)}}, 400, "image: Field required"),
        ("image empty", "POST", "/v1/classify", {"json": {"image": ""}}, 400, "image"),
        ("JSON a list", "POST", "/v1/classify", {"json": [b64(photo)]}, 400, "body"),
        ("JSON invalid", "POST", "/v1/classify", {"content": b"{nope", "headers": JSON}, 400, "not valid JSON"),
        ("JSON not UTF-8", "POST", "/v1/classify", {"content": b'{"image": "\xff\xfe"}', "headers": JSON}, 400,
         "JSON"),
        ("JSON 100000 deep", "POST", "/v1/classify", {"content": b'{"image":' + deep + b"}", "headers": JSON}, 400,
         "recursion limit"),
        ("base64 of text", "POST", "/v1/classify", {"json": {"image": b64(b"not a picture at all")}}, 400,
         "not an image"),
        ("data URL, bad base64", "POST", "/v1/classify", {"json": {"image": "data:image/png;base64,!!"}}, 400,
         "base64"),
        # /v1/classify: multipart
        ("multipart without a file", "POST", "/v1/classify", {"files": {"x": (None, "1")}}, 400, "no file"),
        ("multipart, two files", "POST", "/v1/classify", {"files": [("file", ("a.jpg", photo)),
                                                                    ("file", ("b.jpg", photo))]}, 400,
         "/v1/classify/batch"),
        ("multipart, empty file", "POST", "/v1/classify", {"files": {"file": ("a.jpg", b"")}}, 400, "empty"),
        ("multipart, no boundary", "POST", "/v1/classify", {"content": b"--x\r\n\r\n",
                                                            "headers": {"Content-Type": "multipart/form-data"}}, 400,
         "multipart"),
        # /v1/classify: parameters and methods
        ("top_k 0", "POST", "/v1/classify?top_k=0", {"content": photo, "headers": JPEG}, 400, "top_k"),
        ("top_k a word", "POST", "/v1/classify?top_k=five", {"content": photo, "headers": JPEG}, 400, "top_k"),
        ("top_k past the classes", "POST", "/v1/classify?top_k=1001", {"content": photo, "headers": JPEG}, 400,
         "top_k must be between 1 and 1000"),
        ("timeout_ms negative", "POST", "/v1/classify?timeout_ms=-1", {"content": photo, "headers": JPEG}, 400,
         "timeout_ms"),
        ("timeout_ms NaN", "POST", "/v1/classify?timeout_ms=nan", {"content": photo, "headers": JPEG}, 400,
         "timeout_ms"),
        ("timeout_ms below the floor", "POST", "/v1/classify?timeout_ms=1", {"content": photo, "headers": JPEG}, 400,
         "timeout_ms"),
        ("GET /v1/classify", "GET", "/v1/classify", {}, 405, "GET /v1/classify"),
        ("PUT /v1/classify", "PUT", "/v1/classify", {"content": photo}, 405, "PUT /v1/classify"),
        # /v1/classify/batch
        ("batch, raw body", "POST", "/v1/classify/batch", {"content": photo, "headers": JPEG}, 415, "batch"),
        ("batch, empty list", "POST", "/v1/classify/batch", {"json": {"images": []}}, 400, "images"),
        ("batch, not a list", "POST", "/v1/classify/batch", {"json": {"images": b64(photo)}}, 400,
         "images: Input should be a valid array"),
        ("batch, a number inside", "POST", "/v1/classify/batch", {"json": {"images": [b64(photo), 7]}}, 400,
         "images[1]"),
        ("batch, bad base64 inside", "POST", "/v1/classify/batch", {"json": {"images": [b64(photo), "%%"]}}, 400,
         "images[1] is not valid base64"),
        ("batch, 1000 tiny pictures", "POST", "/v1/classify/batch", {"json": {"images": [b64(tiny)] * 1000}}, 413,
         "--max-queue"),
        ("batch, 300 multipart files", "POST", "/v1/classify/batch",
         {"files": [("files", (f"{i}.png", tiny)) for i in range(300)]}, 413, "--max-queue"),
        ("batch, one bad picture", "POST", "/v1/classify/batch",
         {"files": [("files", ("a.jpg", photo)), ("files", ("b.jpg", b"junk" * 10))]}, 400, "picture 1"),
        ("batch, images missing", "POST", "/v1/classify/batch", {"json": {"image": b64(photo)}}, 400,
         "images: Field required"),
        ("batch, text/plain", "POST", "/v1/classify/batch", {"content": b"x", "headers": {"Content-Type":
                                                                                          "text/plain"}}, 415,
         "Content-Type"),
        ("GET /v1/classify/batch", "GET", "/v1/classify/batch", {}, 405, "GET /v1/classify/batch"),
        # v2 infer: the document
        ("v2 not JSON", "POST", V2, {"content": b"{nope", "headers": JSON}, 400, "not valid JSON"),
        ("v2 100000 deep", "POST", V2, {"content": b'{"inputs":' + deep + b"}", "headers": JSON}, 400,
         "recursion limit"),
        ("v2 a list", "POST", V2, {"json": [tensor()]}, 400, "body"),
        ("v2 no inputs", "POST", V2, {"json": {"outputs": []}}, 400, "inputs: Field required"),
        ("v2 inputs empty", "POST", V2, {"json": {"inputs": []}}, 400, "inputs"),
        ("v2 inputs an object", "POST", V2, {"json": {"inputs": tensor()}}, 400, "inputs: Input should be a valid "
                                                                                 "array"),
        ("v2 id a number", "POST", V2, {"json": {"id": 5, "inputs": [tensor()]}}, 400, "id"),
        ("v2 request parameters a list", "POST", V2, {"json": {"inputs": [tensor()], "parameters": []}}, 400,
         "parameters: Input should be an object"),
        ("v2 tensor parameters a number", "POST", V2, {"json": {"inputs": [tensor(parameters=5)]}}, 400,
         "inputs[0].parameters"),
        ("v2 output parameters a string", "POST", V2,
         {"json": {"inputs": [tensor()], "outputs": [{"name": "logits", "parameters": "x"}]}}, 400,
         "outputs[0].parameters"),
        ("v2 outputs an object", "POST", V2, {"json": {"inputs": [tensor()], "outputs": {"name": "logits"}}}, 400,
         "outputs"),
        ("v2 classification a word", "POST", V2,
         {"json": {"inputs": [tensor()], "outputs": [{"name": "logits", "parameters": {"classification": "x"}}]}},
         400, "classification"),
        ("v2 binary_data a word", "POST", V2,
         {"json": {"inputs": [tensor()], "outputs": [{"name": "logits", "parameters": {"binary_data": "maybe"}}]}},
         400, "binary_data"),
        ("v2 output without a name", "POST", V2, {"json": {"inputs": [tensor()], "outputs": [{}]}}, 400,
         "outputs[0].name"),
        # v2 infer: the tensor
        ("v2 tensor without a name", "POST", V2, {"json": {"inputs": [{"shape": [1], "datatype": "FP32",
                                                                       "data": [0]}]}}, 400, "inputs[0].name"),
        ("v2 unknown datatype", "POST", V2, {"json": {"inputs": [tensor(datatype="FP8")]}}, 400,
         "inputs[0].datatype"),
        ("v2 shape a string", "POST", V2, {"json": {"inputs": [tensor(shape="1,3,64,64")]}}, 400, "inputs[0].shape"),
        ("v2 negative dimension", "POST", V2, {"json": {"inputs": [tensor(shape=[1, 3, -64, 64])]}}, 400,
         "inputs[0].shape[2]"),
        ("v2 float dimension", "POST", V2, {"json": {"inputs": [tensor(shape=[1, 3, 64.5, 64])]}}, 400,
         "inputs[0].shape[2]"),
        ("v2 shape overflowing int64", "POST", V2, {"json": {"inputs": [tensor(shape=[2**31 - 1] * 8)]}}, 400,
         "more than"),
        ("v2 shape with a 0 overflowing int64", "POST", V2,
         {"json": {"inputs": [tensor(shape=[0, 803383, 554, 273, 48737, 11516, 282451, 134217728], data=[])]}}, 400,
         "more than"),
        ("v2 too many dimensions", "POST", V2, {"json": {"inputs": [tensor(shape=[1] * 9)]}}, 400,
         "inputs[0].shape"),
        ("v2 data a string", "POST", V2, {"json": {"inputs": [tensor(data="0,0,0")]}}, 400, "inputs[0].data"),
        ("v2 data with a word", "POST", V2, {"json": {"inputs": [tensor(data=[0.0] * (VALUES - 1) + ["x"])]}}, 400,
         f"inputs[0].data[{VALUES - 1}]"),
        ("v2 too few values", "POST", V2, {"json": {"inputs": [tensor(data=[0.0] * 7)]}}, 400, "values for shape"),
        ("v2 NaN", "POST", V2, {"content": json.dumps({"inputs": [tensor(data=[float("nan")] * VALUES)]}),
                                "headers": JSON}, 400, "finite"),
        ("v2 Infinity", "POST", V2, {"content": json.dumps({"inputs": [tensor(data=[float("inf")] * VALUES)]}),
                                     "headers": JSON}, 400, "finite"),
        ("v2 1e39 (not FP32)", "POST", V2, {"content": json.dumps({"inputs": [tensor(data=[1e39] * VALUES)]}),
                                            "headers": JSON}, 400, "not finite"),
        ("v2 NaN as binary", "POST", V2, binary({"inputs": [bin_input]}, b"\x00\x00\xc0\x7f" * VALUES), 400,
         "not finite"),
        ("v2 wrong shape", "POST", V2, {"json": {"inputs": [tensor(shape=[1, 3, 32, 32], data=[0.0] * 3072)]}}, 400,
         "FP32 [-1, 3, 64, 64]"),
        ("v2 wrong datatype", "POST", V2, {"json": {"inputs": [tensor(datatype="FP16")]}}, 400,
         "expected FP32 [-1, 3, 64, 64], got FP16"),
        ("v2 wrong input name", "POST", V2, {"json": {"inputs": [tensor(name="x")]}}, 400, "'input'"),
        ("v2 the input twice", "POST", V2, {"json": {"inputs": [tensor(), tensor()]}}, 400, "given twice"),
        ("v2 unknown output", "POST", V2, {"json": {"inputs": [tensor()], "outputs": [{"name": "probs"}]}}, 400,
         "'logits'"),
        ("v2 UINT8 data out of range", "POST", V2, {"json": {"inputs": [tensor(datatype="UINT8", data=[300.0] *
                                                                               VALUES)]}}, 400, "0 to 255"),
        # v2 infer: the binary extension
        ("v2 header length superscript", "POST", V2, binary({"inputs": [bin_input]}, fp32, "²".encode()), 400,
         "Inference-Header-Content-Length"),
        ("v2 header length a word", "POST", V2, binary({"inputs": [bin_input]}, fp32, "ten"), 400,
         "Inference-Header-Content-Length"),
        ("v2 header length past the body", "POST", V2, binary({"inputs": [bin_input]}, fp32, "99999999"), 400,
         "Inference-Header-Content-Length is 99999999"),
        ("v2 header length zero", "POST", V2, binary({"inputs": [bin_input]}, fp32, "0"), 400,
         "Inference-Header-Content-Length is 0"),
        ("v2 binary_data_size a float", "POST", V2,
         binary({"inputs": [{**bin_input, "parameters": {"binary_data_size": 8.5}}]}, fp32), 400,
         "binary_data_size"),
        ("v2 binary_data_size wrong", "POST", V2,
         binary({"inputs": [{**bin_input, "parameters": {"binary_data_size": 8}}]}, bytes(8)), 400,
         "does not fit"),
        ("v2 binary data short", "POST", V2, binary({"inputs": [bin_input]}, fp32[:100]), 400, "announced"),
        ("v2 binary bytes unclaimed", "POST", V2, binary({"inputs": [bin_input]}, fp32 + bytes(4)), 400,
         "unclaimed"),
        ("v2 body over the limit", "POST", V2, {"content": huge, "headers": JSON}, 413, "--max-body-mb"),
        # v2: models, versions, methods
        ("v2 unknown model", "POST", "/v2/models/resnet50/infer", {"json": {"inputs": [tensor()]}}, 404,
         "unknown model 'resnet50'"),
        ("v2 unknown version", "POST", "/v2/models/skresnet18/versions/7/infer", {"json": {"inputs": [tensor()]}},
         404, "unknown version '7'"),
        ("v2 metadata, unknown model", "GET", "/v2/models/resnet50", {}, 404, "unknown model"),
        ("v2 config, unknown version", "GET", "/v2/models/skresnet18/versions/2/config", {}, 404,
         "unknown version"),
        ("v2 ready, unknown model", "GET", "/v2/models/x/ready", {}, 404, "unknown model 'x'"),
        ("GET v2 infer", "GET", V2, {}, 405, f"GET {V2}"),
        ("DELETE v2 metadata", "DELETE", "/v2/models/skresnet18", {}, 405, "DELETE"),
        ("POST /v2", "POST", "/v2", {"json": {}}, 405, "POST /v2"),
        # health and metrics
        ("POST /healthz", "POST", "/healthz", {}, 405, "POST /healthz"),
        ("POST /readyz", "POST", "/readyz", {}, 405, "POST /readyz"),
        ("PUT /metrics", "PUT", "/metrics", {"content": b"x"}, 405, "PUT /metrics"),
        ("unknown route", "GET", "/v3/classify", {}, 404, "no route GET /v3/classify"),
        ("path traversal", "GET", "/../../etc/passwd", {}, 404, "no route"),
    ]


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    from tests.conftest import make_image

    return make_image(tmp_path_factory.mktemp("corpus") / "photo.jpg").read_bytes()


def test_corpus_is_large_and_distinct(photo: bytes) -> None:
    requests = corpus(photo)
    assert len(requests) >= 60
    assert len({name for name, *_ in requests}) == len(requests)
    assert {url.split("?")[0] for _, _, url, *_ in requests} >= {
        "/v1/classify", "/v1/classify/batch", V2, "/v2/models/skresnet18/versions/7/infer", "/v2", "/healthz",
        "/readyz", "/metrics"}


def test_every_malformed_request_is_a_json_4xx_and_the_server_carries_on(
    server: ServerProcess, client: httpx.Client, photo: bytes
) -> None:
    before = inferences(client)
    requests = corpus(photo)
    for name, method, url, arguments, status, words in requests:
        response = client.request(method, url, **arguments)
        assert response.status_code == status, (name, response.status_code, response.text[:300])
        assert response.headers["content-type"] == "application/json", name
        message = json.loads(response.text, parse_constant=_refuse)["error"]
        assert words in message, (name, message)
        if status == 405:
            assert method not in response.headers["allow"] and response.headers["allow"], name
        good = client.post("/v1/classify", content=photo, headers=JPEG)
        assert good.status_code == 200, (name, good.text)
    assert inferences(client) - before == len(requests), "only the good pictures reached the model"
    assert "Traceback" not in server.output


def test_a_finite_input_whose_logits_overflow_is_422_not_bare_nan(client: httpx.Client) -> None:
    response = client.post(V2, json={"inputs": [tensor(data=[3e38] * VALUES)]})
    assert response.status_code == 422, response.text
    assert "not finite" in json.loads(response.text, parse_constant=_refuse)["error"]
    good = client.post(V2, json={"inputs": [tensor()]})
    assert good.status_code == 200
    json.loads(good.text, parse_constant=_refuse)


def _refuse(constant: str) -> float:
    raise AssertionError(f"{constant} in a response: not strict JSON")


def test_picture_limits_hold_in_the_library(tmp_path: Path) -> None:
    from sk_deploy.images import ImageLimitError, Preprocess, load_picture

    for size in ((1, 4000), (4000, 1)):
        with pytest.raises(ImageLimitError, match="aspect ratio") as caught:
            load_picture(png_bytes(*size), Preprocess(), max_aspect=32)
        assert caught.value.limit == "max_aspect"
        assert load_picture(png_bytes(*size), Preprocess()).shape == (3, 224, 224)
