"""``sk-deploy optimize`` and ``sk-deploy import`` on SK graphs written the way other code bases write them
(timm-style stack / sum / view / softmax, three branches, an unrelated softmax beside): the SK blocks rewritten,
the rest left alone, the outputs equal to 1e-5; an imported bundle verifies against its input graph and
quantizes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from sk_deploy.bundle import Bundle
from sk_deploy.cli import app
from sk_deploy.compare import generated_images
from sk_deploy.graph.foreign import import_onnx
from tests.graph.conftest import calibrate_bn
from tests.graph.test_pass_sk_select import SKNetlet, TimmStyleSK

runner = CliRunner()


class WithAttentionSoftmax(nn.Module):
    """An SK network whose head is a spatial attention pooling (a Softmax over positions) and a class softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.sk = TimmStyleSK(8, 16)
        self.score = nn.Conv2d(16, 1, 1)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.sk(self.stem(x))
        weights = torch.softmax(self.score(x).flatten(2), dim=-1)  # (N, 1, HW): not an SK select
        pooled = (x.flatten(2) * weights).sum(-1)
        return torch.softmax(self.head(pooled), dim=-1)


class Classifier(nn.Module):
    """Two SK stages (two and three branches) and 1000 classes, at 32 x 32: something to import."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.sk1, self.sk2 = TimmStyleSK(8, 16), TimmStyleSK(16, 16, paths=3)
        self.head = nn.Linear(16, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.sk2(self.sk1(self.stem(x))).mean((2, 3)))


def _write(module: nn.Module, path: Path, size: int = 16) -> Path:
    """Export the way another project would: torch.onnx.export (TorchScript), a dynamic batch axis."""
    torch.manual_seed(0)
    module = calibrate_bn(module, (3, size, size)).eval()
    torch.onnx.export(module, torch.randn(2, 3, size, size), str(path), input_names=["input"],
                      output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
                      opset_version=17, dynamo=False)
    return path


def _ops(path: Path) -> Counter:
    return Counter(node.op_type for node in onnx.load(path).graph.node)


def _outputs(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


@pytest.mark.parametrize(("module", "rewritten", "softmax_before", "softmax_left"), [
    (SKNetlet(TimmStyleSK(8, 16), 16), 1, 1, 0),
    (SKNetlet(TimmStyleSK(8, 16, paths=3), 16), 1, 1, 1),  # M = 3: the softmax stays, over an (N, M, C) view
    (WithAttentionSoftmax(), 1, 3, 2),
], ids=["timm-style", "three-branches", "unrelated-softmax"])
def test_optimize_rewrites_sk_blocks_and_keeps_outputs(tmp_path: Path, module: nn.Module, rewritten: int,
                                                       softmax_before: int, softmax_left: int) -> None:
    source, out = _write(module, tmp_path / "in.onnx"), tmp_path / "out.onnx"
    result = runner.invoke(app, ["optimize", str(source), "-o", str(out), "--input-size", "16"],
                           env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert f"SK blocks: {rewritten} rewritten" in result.output and "max abs difference" in result.output
    before, after = _ops(source), _ops(out)
    assert (before["Softmax"], after["Softmax"]) == (softmax_before, softmax_left)
    inferred = onnx.shape_inference.infer_shapes(onnx.load(out)).graph.value_info
    ranks = {len(v.type.tensor_type.shape.dim) for v in inferred}
    assert 5 not in ranks
    x = np.random.default_rng(1).standard_normal((3, 3, 16, 16), dtype=np.float32)
    np.testing.assert_allclose(_outputs(out, x), _outputs(source, x), atol=1e-5, rtol=0)
    if softmax_before > rewritten:
        assert "left alone" in result.output and "skipped:" in result.output


def test_optimize_refuses_a_file_that_is_not_onnx(tmp_path: Path) -> None:
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a graph")
    result = runner.invoke(app, ["optimize", str(bad), "-o", str(tmp_path / "o.onnx")])
    assert result.exit_code == 1 and "\n" not in result.output.strip()


def test_import_makes_a_bundle_that_verifies_and_quantizes(tmp_path: Path) -> None:
    source = _write(Classifier(), tmp_path / "classifier.onnx", size=32)
    out = tmp_path / "bundle"
    result = runner.invoke(app, ["import", str(source), "--out", str(out)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "SK blocks: 2 rewritten" in result.output
    bundle = Bundle.open(out)
    assert bundle.weights["source"] == "onnx" and bundle.preprocess.crop == 32 and bundle.classes == 1000
    assert onnx.load(out / "model.raw.onnx").graph.node == onnx.load(source).graph.node

    verified = runner.invoke(app, ["verify", str(out), "--max-abs", "1e-5"], env={"COLUMNS": "200"})
    assert verified.exit_code == 0, verified.output
    assert Bundle.open(out).stage("verify")["files"]["model.onnx"]["max_abs"] <= 1e-5

    photos = tmp_path / "photos"
    photos.mkdir()
    for i, data in enumerate(generated_images(6)):
        (photos / f"{i}.png").write_bytes(data)
    quantized = runner.invoke(app, ["quantize", str(out), "--precision", "int8", "--target", "cpu", "--images",
                                    str(photos), "--calib-size", "4", "--holdout-size", "2", "--no-gate"])
    assert quantized.exit_code in (0, 1), quantized.output
    assert Bundle.open(out).has("model.int8-cpu.onnx")
    from sk_deploy.runtime.predictor import Predictor

    with Predictor(Bundle.open(out), "ort-cpu", "int8") as predictor:
        assert predictor.predict(predictor.example(2)).shape == (2, 1000)
    from sk_deploy.bench.latency import BenchConfig, BenchRun

    rows = BenchRun(Bundle.open(out), BenchConfig(backends=("ort-cpu",), precisions=("fp32", "int8"), batches=(2,),
                                                  warmup_s=0, duration_s=0)).execute()
    status = {(r.backend, r.precision): r.status for r in rows}
    assert status == {("torch", "fp32"): "skipped", ("ort-cpu", "fp32"): "ok", ("ort-cpu", "int8"): "ok"}


def test_import_refuses_a_graph_that_is_not_a_picture_classifier(tmp_path: Path) -> None:
    path = tmp_path / "flat.onnx"
    torch.onnx.export(nn.Linear(4, 2), torch.randn(1, 4), str(path), dynamo=False)
    with pytest.raises(Exception, match=r"is not a square \(N, 3, H, W\) picture"):
        import_onnx(path, tmp_path / "b")
    assert not (tmp_path / "b").exists()
