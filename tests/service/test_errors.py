"""Bad input never reaches the model and never takes the server down: each gets its status and a JSON body
with a message, and the server classifies the next good picture afterwards."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pytest
from PIL import Image

JPEG = {"Content-Type": "image/jpeg"}


def png_bytes(width: int, height: int) -> bytes:
    """A one-colour PNG: a few hundred bytes however many pixels it declares."""
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 140, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


def inferences(client: httpx.Client) -> float:
    line = next(x for x in client.get("/metrics").text.splitlines() if x.startswith("nv_inference_count{"))
    return float(line.rsplit(" ", 1)[1])


def bad_requests(photo: bytes) -> list[tuple[str, dict, int, str]]:
    """(name, httpx request arguments, expected status, words the message must contain)."""
    bomb = png_bytes(2000, 2000)  # 4 megapixels against the server's 1 megapixel limit
    assert len(bomb) < 100_000
    v2 = "/v2/models/skresnet18/infer"
    tensor = {"name": "input", "shape": [1, 3, 64, 64], "datatype": "FP32", "data": [0.0] * (3 * 64 * 64)}
    return [
        ("empty body", {"url": "/v1/classify", "content": b"", "headers": JPEG}, 400, "empty"),
        ("not an image", {"url": "/v1/classify", "content": b"this is not a picture " * 50, "headers": JPEG}, 400,
         "not an image"),
        ("truncated", {"url": "/v1/classify", "content": photo[: len(photo) // 3], "headers": JPEG}, 400,
         "truncated"),
        ("decompression bomb", {"url": "/v1/classify", "content": bomb, "headers": {"Content-Type": "image/png"}},
         400, "too many pixels"),
        ("too large", {"url": "/v1/classify", "content": b"\xff" * (1024 * 1024 + 1), "headers": JPEG}, 413,
         "--max-body-mb"),
        ("wrong content type", {"url": "/v1/classify", "content": photo, "headers": {"Content-Type": "text/plain"}},
         415, "Content-Type"),
        ("bad base64", {"url": "/v1/classify", "json": {"image": "%%%"}}, 400, "base64"),
        ("multipart without a file", {"url": "/v1/classify", "files": {"x": (None, "1")}}, 400, "no file"),
        ("top_k out of range", {"url": "/v1/classify?top_k=0", "content": photo, "headers": JPEG}, 400, "top_k"),
        ("v2 wrong shape", {"url": v2, "json": {"inputs": [{**tensor, "shape": [1, 3, 32, 32],
                                                            "data": [0.0] * (3 * 32 * 32)}]}},
         400, "FP32 [-1, 3, 64, 64]"),
        ("v2 wrong dtype", {"url": v2, "json": {"inputs": [{**tensor, "datatype": "FP16"}]}}, 400,
         "expected FP32 [-1, 3, 64, 64], got FP16"),
        ("v2 wrong input name", {"url": v2, "json": {"inputs": [{**tensor, "name": "x"}]}}, 400, "'input'"),
        ("v2 data count", {"url": v2, "json": {"inputs": [{**tensor, "data": [0.0] * 7}]}}, 400, "values for shape"),
        ("v2 not JSON", {"url": v2, "content": b"{nope", "headers": {"Content-Type": "application/json"}}, 400,
         "JSON"),
        ("v2 unknown output", {"url": v2, "json": {"inputs": [tensor], "outputs": [{"name": "probs"}]}}, 400,
         "'logits'"),
        ("v2 unknown model", {"url": "/v2/models/resnet50/infer", "json": {"inputs": [tensor]}}, 404,
         "unknown model 'resnet50'"),
    ]


def test_every_bad_input_answers_json_and_the_server_carries_on(
    client: httpx.Client, generated_jpeg: Path
) -> None:
    photo = generated_jpeg.read_bytes()
    before = inferences(client)
    for name, request, status, words in bad_requests(photo):
        response = client.request("POST", **request)
        assert response.status_code == status, (name, response.text)
        assert response.headers["content-type"] == "application/json", name
        assert words in response.json()["error"], (name, response.json())
        good = client.post("/v1/classify", content=photo, headers=JPEG)
        assert good.status_code == 200, (name, good.text)
    assert inferences(client) - before == len(bad_requests(photo)), "only the good pictures reached the model"


@pytest.mark.parametrize(("method", "path", "status"), [("GET", "/nowhere", 404), ("GET", "/v1/classify", 405),
                                                         ("GET", "/v2/models/resnet50", 404),
                                                         ("GET", "/v2/models/skresnet18/versions/7/ready", 404)])
def test_unknown_routes_and_models_are_json(client: httpx.Client, method: str, path: str, status: int) -> None:
    response = client.request(method, path)
    assert response.status_code == status
    assert json.loads(response.text)["error"]

