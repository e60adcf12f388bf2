"""The TensorRT INT8 form as INT8 + FP16 (precision/mixed.py), on sknet26 and seresnet50 exported at 64x64: an SK and
an SE bottleneck design (sknet26 has the blocks of sknet50, two per stage: the depth proves nothing here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from sk_deploy.bundle import Bundle
from sk_deploy.metrics import agreement
from sk_deploy.precision.calibration import ImageBatches, list_images, split_images
from sk_deploy.precision.fp16 import PrecisionError
from sk_deploy.precision.int8 import quantize_int8
from sk_deploy.precision.mixed import FP32_OPS, to_mixed
from sk_deploy.runners import ort_logits
from sk_deploy.runtime.ort_backend import ort_disabled_optimizers
from tests.bundles import BundleCache

from ..conftest import make_image

MODELS = ("sknet26", "seresnet50")


@pytest.fixture(scope="module")
def pictures(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    folder = tmp_path_factory.mktemp("mixed-pictures")
    return [make_image(folder / f"p{i:02d}.jpg", size=(96, 80), seed=i) for i in range(12)]


def int8_forms(bundle: Bundle, files: list[Path], folder: Path, calib: int) -> tuple[Path, Path, list[Path]]:
    """The bundle's float32 graph quantized (TensorRT form, float32 elsewhere) and its INT8 + FP16 form."""
    spec = bundle.preprocess
    split = split_images(files, calib, len(files) - calib)
    qdq, mixed = folder / f"{bundle.model_name}.qdq.onnx", folder / f"{bundle.model_name}.mixed.onnx"
    reader = ImageBatches(split.calibration, bundle.input_name, spec, batch_size=4)
    quantize_int8(onnx.load(bundle.file("model.onnx")), qdq, reader, target="tensorrt")
    model, report = to_mixed(onnx.load(qdq))
    assert report.opset >= 19 and report.float16_nodes > report.float32_nodes
    onnx.save(model, mixed)
    return qdq, mixed, split.holdout


@pytest.fixture(scope="module")
def forms(bundles: BundleCache, pictures: list[Path], tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("mixed")
    return {name: (bundles.get(name), *int8_forms(bundles.get(name), pictures, folder, 8)) for name in MODELS}


def walk(model: onnx.ModelProto) -> tuple[dict[str, int], dict[str, list[int | None]]]:
    """Element type and shape of every tensor, by ONNX shape inference."""
    inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    g = inferred.graph
    values = [*g.input, *g.value_info, *g.output]
    types = {v.name: v.type.tensor_type.elem_type for v in values} | {t.name: t.data_type for t in g.initializer}
    shapes = {v.name: [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
              for v in values}
    return types, shapes


@pytest.mark.parametrize("name", MODELS)
def test_no_float32_on_full_size_maps(forms: dict, name: str) -> None:
    _, qdq, mixed, _ = forms[name]
    model = onnx.load(mixed)
    onnx.checker.check_model(model, full_check=True)
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [TensorProto.FLOAT]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [TensorProto.FLOAT]
    types, shapes = walk(model)
    graph_inputs = {i.name for i in model.graph.input}
    full_size = [n for n in model.graph.node
                 if any(len(shapes.get(t, [])) == 4 and shapes[t][2] * shapes[t][3] > 1 for t in n.output)]
    assert len(full_size) > 100
    float32_on_maps = [
        n.name for n in full_size
        if n.op_type not in FP32_OPS and n.op_type != "Cast" and not set(n.input) & graph_inputs
        and any(types.get(t) == TensorProto.FLOAT for t in [*n.input, *n.output] if t)
    ]
    assert float32_on_maps == []
    # the casts to float32 feed only the unsafe kinds; those read float32 and are in the graph
    readers = {i: [m for m in model.graph.node if i in m.input] for n in model.graph.node for i in n.output}
    casts_up = [n for n in model.graph.node if n.op_type == "Cast" and n.attribute[0].i == TensorProto.FLOAT
                and n.output[0] not in {o.name for o in model.graph.output}]
    assert casts_up and all(r.op_type in FP32_OPS for c in casts_up for r in readers[c.output[0]])
    pools = [n for n in model.graph.node if n.op_type == "GlobalAveragePool"]
    assert pools and all(types[p.input[0]] == TensorProto.FLOAT for p in pools)
    # what was float32 between the quantized convolutions is float16 now: SK Select / SE gating, classifier
    before = walk(onnx.load(qdq))[0]
    gating = [n for n in model.graph.node if n.op_type in ("Mul", "Sigmoid", "Gemm")]
    assert gating and all(types[n.output[0]] == TensorProto.FLOAT16 for n in gating)
    assert all(before[n.output[0]] == TensorProto.FLOAT for n in gating if n.output[0] in before)


@pytest.mark.parametrize("name", MODELS)
def test_quantize_linear_is_int8_symmetric_with_float16_scales(forms: dict, name: str) -> None:
    _, qdq, mixed, _ = forms[name]
    model = onnx.load(mixed)
    inits = {t.name: t for t in model.graph.initializer}
    types, _ = walk(model)
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert len(quantize) == sum(n.op_type == "QuantizeLinear" for n in onnx.load(qdq).graph.node) > 20
    for q in quantize:
        zero_point = onnx.numpy_helper.to_array(inits[q.input[2]])
        assert zero_point.dtype == np.int8 and not zero_point.any()
        assert inits[q.input[1]].data_type == types[q.input[0]]  # opset 19: scale and input of one type
    dequantize = [n for n in model.graph.node if n.op_type == "DequantizeLinear"]
    assert all(inits[d.input[1]].data_type == TensorProto.FLOAT16 for d in dequantize)
    assert ort_disabled_optimizers(mixed) == ["WeightBiasQuantization"] and ort_disabled_optimizers(qdq) == []


@pytest.mark.parametrize("name", MODELS)
def test_runs_in_onnx_runtime_close_to_the_float32_form(forms: dict, name: str) -> None:
    bundle, qdq, mixed, holdout = forms[name]
    spec = bundle.preprocess
    inputs = np.concatenate(list(ImageBatches(holdout, "x", spec).arrays()))
    reference = ort_logits(bundle.file("model.onnx"), lambda dtype: inputs)
    int8_fp32 = agreement(reference, ort_logits(qdq, lambda dtype: inputs))
    int8_fp16 = agreement(reference, ort_logits(mixed, lambda dtype: inputs))
    # float16 adds rounding well below int8's: the two forms stay within a small margin of each other
    assert int8_fp16.cosine_mean > int8_fp32.cosine_mean - 0.002, (int8_fp32, int8_fp16)
    assert int8_fp16.cosine_mean > 0.95, int8_fp16


def test_exclusions_stay_float32_and_bad_names_fail(forms: dict) -> None:
    _, qdq, _, _ = forms["sknet26"]
    source = onnx.load(qdq)
    sigmoid = next(n.name for n in source.graph.node if n.op_type == "Sigmoid")
    model, report = to_mixed(source, exclude=["Gemm", sigmoid])
    types, _ = walk(model)
    assert "Gemm" in report.fp32_op_types and report.fp32_nodes == [sigmoid]
    assert all(types[n.output[0]] == TensorProto.FLOAT for n in model.graph.node
               if n.op_type == "Gemm" or n.name == sigmoid)
    unchanged, kept = to_mixed(source, "fp32")
    assert unchanged is source and kept.high_precision == "fp32"
    with pytest.raises(PrecisionError, match="unknown high precision 'bf16'"):
        to_mixed(source, "bf16")


@pytest.mark.parametrize("name", MODELS)
def test_real_photos_keep_cosine(bundles: BundleCache, shared_data: Path, tmp_path: Path, name: str) -> None:
    """Calibrated on 32 real photos, measured on 32 others: mean cosine >= 0.99 against float32."""
    bundle = bundles.get(name)
    files = list_images(shared_data / "imagenet-val-1300")[:64]
    _, mixed, holdout = int8_forms(bundle, files, tmp_path, 32)
    spec = bundle.preprocess
    inputs = np.concatenate(list(ImageBatches(holdout, "x", spec).arrays()))
    figures = agreement(ort_logits(bundle.file("model.onnx"), lambda dtype: inputs),
                        ort_logits(mixed, lambda dtype: inputs))
    assert figures.images == 32 and figures.cosine_mean >= 0.99, figures
