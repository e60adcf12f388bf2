"""FP16 and INT8 graphs on a real ONNX export, checked in ONNX Runtime: structure and numbers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from sk_deploy.images import Preprocess
from sk_deploy.metrics import agreement
from sk_deploy.models import create_model
from sk_deploy.models.bn_stats import make_realistic
from sk_deploy.precision.calibration import CalibrationError, ImageBatches, list_images, split_images
from sk_deploy.precision.fp16 import DEFAULT_FP32_OPS, PrecisionError, convert_fp16
from sk_deploy.precision.int8 import quantize_int8, residual_adds
from sk_deploy.runners import ort_logits

from ..conftest import make_image

SIZE = 96
SPEC = Preprocess(resize=110, crop=SIZE)


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("pictures")
    return [make_image(folder / f"p{i:02d}.jpg", size=(160, 128), seed=i) for i in range(24)]


@pytest.fixture(scope="module")
def fp32_model(tmp_path_factory: pytest.TempPathFactory, pictures: list[Path]) -> Path:
    """skresnet18 at 96x96 with BatchNorm statistics taken from the pictures, exported with dynamo."""
    torch.manual_seed(0)
    model = create_model("skresnet18")
    batches = ImageBatches(pictures, "x", SPEC, batch_size=8)
    make_realistic(model, (torch.from_numpy(b) for b in batches.arrays()))
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    torch.onnx.export(model, (torch.randn(5, 3, SIZE, SIZE),), path, dynamo=True, external_data=False,
                      dynamic_shapes={"x": {0: torch.export.Dim("batch")}}, verbose=False)
    return path


def _inputs(pictures: list[Path]) -> np.ndarray:
    return np.concatenate(list(ImageBatches(pictures, "x", SPEC, batch_size=8).arrays()))


def run_logits(path: Path, inputs: np.ndarray) -> np.ndarray:
    return ort_logits(path, lambda dtype: inputs)


def test_fp16_graph(fp32_model: Path, pictures: list[Path], tmp_path: Path) -> None:
    model, report = convert_fp16(onnx.load(fp32_model))
    onnx.checker.check_model(model, full_check=True)
    inits = {t.name: t for t in model.graph.initializer}
    conv_weights = [inits[n.input[1]] for n in model.graph.node if n.op_type == "Conv"]
    assert conv_weights and all(w.data_type == onnx.TensorProto.FLOAT16 for w in conv_weights)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    # reductions stay float32: their inputs are cast up
    producers = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:
        if node.op_type in ("ReduceMean", "GlobalAveragePool"):
            assert producers[node.input[0]].op_type in ("Cast", *DEFAULT_FP32_OPS)
    assert report.float16_initializers >= len(conv_weights) and report.float32_initializers == 0
    onnx.save(model, tmp_path / "fp16.onnx")
    inputs = _inputs(pictures)
    figures = agreement(run_logits(fp32_model, inputs), run_logits(tmp_path / "fp16.onnx", inputs))
    assert figures.cosine_mean > 0.999, figures


def test_fp16_exclusions(fp32_model: Path) -> None:
    model = onnx.load(fp32_model)
    first_conv = next(n.name for n in model.graph.node if n.op_type == "Conv")
    converted, report = convert_fp16(model, exclude=["Gemm", first_conv])
    assert "Gemm" in report.fp32_op_types and report.fp32_nodes == [first_conv]
    inits = {t.name: t for t in converted.graph.initializer}
    gemm = next(n for n in converted.graph.node if n.op_type == "Gemm")
    assert inits[gemm.input[1]].data_type == onnx.TensorProto.FLOAT
    with pytest.raises(PrecisionError, match="no op type or node of that name"):
        convert_fp16(model, exclude=["NotAnOp"])


@pytest.mark.parametrize("target", ["tensorrt", "cpu"])
def test_int8_graph(fp32_model: Path, pictures: list[Path], tmp_path: Path, target: str) -> None:
    split = split_images(pictures, 16, 8)
    out = tmp_path / f"int8-{target}.onnx"
    report = quantize_int8(onnx.load(fp32_model), out, ImageBatches(split.calibration, "x", SPEC), target=target)
    assert report.calibration_images == 16 and not report.skipped_images
    model = onnx.load(out)
    onnx.checker.check_model(model)
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert quantize
    for q in quantize:
        zero_point = inits[q.input[2]]
        if target == "tensorrt":
            assert zero_point.dtype == np.int8 and not zero_point.any()
        else:
            assert zero_point.dtype == np.uint8
    # every spatial conv weight is int8 per-channel (one scale per output channel)
    producers = {o: n for n in model.graph.node for o in n.output}
    spatial = [n for n in model.graph.node if n.op_type == "Conv" and n.input[1] in producers]
    assert len(spatial) >= 20
    for conv in spatial:
        dq = producers[conv.input[1]]
        assert dq.op_type == "DequantizeLinear" and inits[dq.input[0]].dtype == np.int8
        assert inits[dq.input[1]].shape == (inits[dq.input[0]].shape[0],)
    if target == "tensorrt":  # biases stay float; the residual adds have Q/DQ on both inputs
        assert not any(inits[n.input[0]].dtype == np.int32 for n in model.graph.node
                       if n.op_type == "DequantizeLinear" and n.input[0] in inits)
        adds = residual_adds(onnx.load(fp32_model))
        add_nodes = [n for n in model.graph.node if n.name in adds]
        assert add_nodes and all(producers[i].op_type == "DequantizeLinear" for n in add_nodes for i in n.input)
    held_out = _inputs(split.holdout)
    figures = agreement(run_logits(fp32_model, held_out), run_logits(out, held_out))
    # A sanity bound (a wrong scale or placement gives ~0): the real gate is measured on real photos.
    assert figures.cosine_mean > 0.9, figures


def test_calibration_skips_corrupt_files_and_counts_them(pictures: list[Path], tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(pictures[0].read_bytes()[:200])
    (tmp_path / "notes.txt").write_text("not a picture")
    files = [*pictures[:3], bad]
    batches = ImageBatches(files, "x", SPEC, batch_size=2)
    arrays = list(batches.arrays())
    assert sum(len(a) for a in arrays) == 3 and batches.used == 3
    assert [p for p, _ in batches.skipped] == [bad]
    feeds = []
    while (feed := batches.get_next()) is not None:
        feeds.append(feed)
    assert [f["x"].shape[0] for f in feeds] == [2, 1]
    uint8 = next(ImageBatches(files[:1], "x", SPEC, uint8_nhwc=True).arrays())
    assert uint8.dtype == np.uint8 and uint8.shape == (1, SIZE, SIZE, 3)


def test_split_is_deterministic_and_disjoint(pictures: list[Path]) -> None:
    a, b = split_images(pictures, 10, 6), split_images(pictures, 10, 6)
    assert a == b and len(a.calibration) == 10 and len(a.holdout) == 6
    assert not set(a.calibration) & set(a.holdout)
    assert split_images(pictures, 10, 6, seed=1) != a


def test_bad_calibration_folders(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="no such directory"):
        list_images(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibrationError, match="no pictures found"):
        list_images(tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.jpg").write_bytes(b"garbage")
    batches = ImageBatches(list_images(tmp_path / "junk"), "x", SPEC)
    with pytest.raises(CalibrationError, match="none of the 1 images could be read"):
        list(batches.arrays())
