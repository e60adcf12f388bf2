"""``sk-deploy evaluate``: top-1 / top-5 from ground-truth labels (a CSV, or a folder per class), checked against
a hand computation on a few files, per graph, beside agreement with float32; recorded in the manifest."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from typer.testing import CliRunner

from sk_deploy.bundle import Bundle
from sk_deploy.cli import app
from sk_deploy.compare import generated_images
from sk_deploy.evaluate import RANDOM_NOTE, evaluate_bundle, read_label_csv
from sk_deploy.images import load_batch
from sk_deploy.machine import probe_machine


def _logits(bundle: Bundle, files: list[Path]) -> np.ndarray:
    session = ort.InferenceSession(str(bundle.path / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(None, {bundle.input_name: load_batch(files, bundle.preprocess)})[0]


def strict_json(text: str) -> dict:
    """``text`` parsed as RFC 8259 JSON: NaN and Infinity are errors."""
    def refuse(constant: str) -> None:
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def _ranked(row: np.ndarray) -> list[int]:
    return sorted(range(len(row)), key=lambda c: -row[c])


@pytest.fixture()
def bundle(small_bundle: Bundle, tmp_path: Path) -> Bundle:
    copy = tmp_path / "bundle"
    shutil.copytree(small_bundle.path, copy)
    return Bundle.open(copy)


def test_csv_labels_against_a_hand_computation(bundle: Bundle, tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    files = []
    for i, data in enumerate(generated_images(6)):
        files.append(photos / f"img{i}.png")
        files[-1].write_bytes(data)
    ranked = [_ranked(row) for row in _logits(bundle, files)]
    # labels: the best class for three files, the third best for one, the worst for two
    labels = [ranked[0][0], ranked[1][0], ranked[2][0], ranked[3][2], ranked[4][-1], ranked[5][-1]]
    csv = tmp_path / "labels.csv"
    csv.write_text("file,class\n" + "".join(f"img{i}.png, {c}\n" for i, c in enumerate(labels)))

    report = evaluate_bundle(bundle, photos, csv)
    # every backend that runs here, at every precision it serves of the bundle (fp32 only: no other graph)
    row, openvino = report.rows
    assert (row.file, row.precision, row.backend) == ("model.onnx", "fp32", "ort-cpu")
    assert (row.top1, row.top5) == (3 / 6, 4 / 6)
    assert row.agreement.top1_agreement == 1.0 and row.agreement.max_abs == 0.0
    assert (openvino.file, openvino.precision, openvino.backend) == ("model.onnx", "fp32", "openvino")
    assert openvino.agreement.cosine_min > 0.9999
    not_run = {(s["backend"], s["precision"]): s["reason"] for s in report.skipped}
    assert not_run[("ort-cuda", None)] == "no CUDA GPU here"
    if not probe_machine().cpu.native_bf16:  # bf16 is refused, and says why
        assert not_run[("openvino", "bf16")].startswith("bf16 needs a CPU with native bfloat16")
    recorded = Bundle.open(bundle.path).stage("evaluate")
    assert recorded["labelled"] and recorded["accuracy_meaningful"] and recorded["rows"][0]["top1"] == 0.5


def test_folder_per_class_and_the_cli(bundle: Bundle, tmp_path: Path) -> None:
    photos = tmp_path / "classes"
    pictures = generated_images(4)
    files = []
    for i, wnid in enumerate(("n01440764", "n01443537")):  # tench (0), goldfish (1)
        (photos / wnid).mkdir(parents=True)
        for j in range(2):
            files.append(photos / wnid / f"{j}.png")
            files[-1].write_bytes(pictures[2 * i + j])
    top = [_ranked(row) for row in _logits(bundle, files)]
    truth = [0, 0, 1, 1]
    top1 = np.mean([t[0] == c for t, c in zip(top, truth, strict=True)])
    top5 = np.mean([c in t[:5] for t, c in zip(top, truth, strict=True)])
    result = CliRunner().invoke(app, ["evaluate", str(bundle.path), "--images", str(photos), "--json"])
    assert result.exit_code == 0, result.output
    row = strict_json(result.stdout)["rows"][0]  # stderr may hold the wait line
    # model.onnx against itself: no noise, an infinite SQNR, written as null (strict JSON), here and in the manifest
    assert row["agreement"]["max_abs"] == 0.0 and row["agreement"]["sqnr_db"] is None
    assert strict_json((bundle.path / "manifest.json").read_text())["stages"]["evaluate"]["rows"][0]["agreement"][
        "sqnr_db"] is None
    assert (row["top1"], row["top5"]) == (pytest.approx(top1), pytest.approx(top5))


def test_random_weights_show_agreement_only(tmp_path: Path, bundle: Bundle) -> None:
    bundle.manifest["model"]["weights"] = {"source": "random", "seed": 0}
    bundle.save()
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a.png").write_bytes(generated_images(1)[0])
    (photos / "labels.csv").write_text("a.png,3\n")
    result = CliRunner().invoke(app, ["evaluate", str(bundle.path), "--images", str(photos), "--labels",
                                      str(photos / "labels.csv")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "top-1 agreement" in result.output and "top-5 │" not in result.output
    assert RANDOM_NOTE.split(":")[0] in result.output


def test_bad_labels_are_one_line(tmp_path: Path, bundle: Bundle) -> None:
    bad = tmp_path / "labels.csv"
    bad.write_text("a.png,3\nb.png,x\n")
    with pytest.raises(Exception, match=r"labels.csv:2: class index 'x' is not a whole number"):
        read_label_csv(bad)
    photos = tmp_path / "p"
    photos.mkdir()
    (photos / "z.png").write_bytes(generated_images(1)[0])
    result = CliRunner().invoke(app, ["evaluate", str(bundle.path), "--images", str(photos), "--labels",
                                      str(tmp_path / "none.csv")])
    assert result.exit_code == 1 and "cannot read the labels" in result.output


def test_real_photos_against_their_labels(bundle: Bundle, shared_data: Path) -> None:
    folder = shared_data / "imagenet-val-1300"
    table = read_label_csv(folder / "labels.csv")
    files = sorted(folder.glob("*.JPEG"))[:12]
    ranked = [_ranked(row) for row in _logits(bundle, files)]
    truth = [table[f.name] for f in files]
    report = evaluate_bundle(bundle, folder, folder / "labels.csv", limit=12, record=False)
    assert report.count == 12
    assert report.rows[0].top1 == np.mean([r[0] == c for r, c in zip(ranked, truth, strict=True)])
    assert report.rows[0].top5 == np.mean([c in r[:5] for r, c in zip(ranked, truth, strict=True)])
