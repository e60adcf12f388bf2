"""/v1/classify on a real server: a real photo as a raw body, a multipart file and base64 JSON gives the same
top-k as the Predictor on the same picture; the batch endpoint; health, readiness and the metrics it counts."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import numpy as np
import pytest

from sk_deploy.bundle import Bundle
from sk_deploy.images import load_batch
from sk_deploy.runtime.classify import softmax
from sk_deploy.runtime.predictor import Predictor
from tests.conftest import make_image


def predictor_probabilities(bundle: Bundle, pictures: list[Path]) -> np.ndarray:
    """What the Predictor itself says about ``pictures`` (ort-cpu, the bundle's preprocessing)."""
    batch = load_batch(list(pictures), bundle.preprocess)
    with Predictor(bundle, "ort-cpu") as predictor:
        return softmax(predictor.predict(batch))


def check_answer(answer: dict, probs: np.ndarray, k: int) -> None:
    assert [p["index"] for p in answer["predictions"]] == np.argsort(-probs, kind="stable")[:k].tolist()
    for p in answer["predictions"]:
        assert p["probability"] == pytest.approx(probs[p["index"]], rel=1e-4)
        assert isinstance(p["label"], str) and p["label"]
    timings = answer["timings_ms"]
    assert {"queue", "preprocess", "inference", "total"} <= set(timings)
    assert 0 <= timings["queue"] <= timings["total"] and timings["inference"] > 0


def test_real_photo_three_ways(client: httpx.Client, small_bundle: Bundle, real_photo: Path) -> None:
    probs = predictor_probabilities(small_bundle, [real_photo])[0]
    data = real_photo.read_bytes()
    answers = [
        client.post("/v1/classify?top_k=5", content=data, headers={"Content-Type": "image/jpeg"}),
        client.post("/v1/classify", files={"file": ("tench.jpg", data, "image/jpeg")}, params={"top_k": 5}),
        client.post("/v1/classify", json={"image": base64.b64encode(data).decode()}),
    ]
    for response in answers:
        assert response.status_code == 200, response.text
        answer = response.json()
        assert (answer["model"], answer["backend"], answer["precision"], answer["file"]) == (
            "skresnet18", "ort-cpu", "fp32", "model.onnx")
        check_answer(answer, probs, 5)


def test_batch_endpoint(client: httpx.Client, small_bundle: Bundle, tmp_path: Path) -> None:
    pictures = [make_image(tmp_path / f"p{i}.{fmt}", size=(200 + 40 * i, 150), mode=mode, seed=i)
                for i, (fmt, mode) in enumerate([("jpg", "RGB"), ("png", "RGBA"), ("webp", "RGB"), ("png", "L")])]
    probs = predictor_probabilities(small_bundle, pictures)
    files = [("files", (p.name, p.read_bytes(), "application/octet-stream")) for p in pictures]
    response = client.post("/v1/classify/batch?top_k=3", files=files)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == len(pictures)
    for answer, row in zip(results, probs, strict=True):
        check_answer(answer, row, 3)
    as_json = client.post("/v1/classify/batch", json={"images": [base64.b64encode(p.read_bytes()).decode()
                                                                for p in pictures]})
    assert [r["predictions"][0]["index"] for r in as_json.json()["results"]] == probs.argmax(1).tolist()


def test_health_readiness_and_metrics(client: httpx.Client, generated_jpeg: Path) -> None:
    assert client.get("/healthz").json() == {"status": "live"}
    assert client.get("/readyz").json() == {"status": "ready", "model": "skresnet18"}
    index = client.get("/").json()
    assert index["model"] == "skresnet18" and index["ready"] and index["backend"].startswith("ort-cpu")

    def count(text: str, name: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))

    before = client.get("/metrics").text
    for _ in range(3):
        assert client.post("/v1/classify", content=generated_jpeg.read_bytes(),
                           headers={"Content-Type": "image/jpeg"}).status_code == 200
    after = client.get("/metrics")
    assert after.headers["content-type"].startswith("text/plain")
    for name in ("nv_inference_request_success{", "nv_inference_count{", "sk_batch_size_count{",
                 'sk_requests_total{endpoint="/v1/classify",status="200"}'):
        assert count(after.text, name) - count(before, name) == 3, name
    for name in ("sk_request_duration_seconds_bucket", "sk_queue_duration_seconds_bucket",
                 "sk_compute_duration_seconds_bucket", "sk_queue_depth{", "nv_inference_exec_count{",
                 "nv_inference_compute_infer_duration_us{"):
        assert name in after.text
