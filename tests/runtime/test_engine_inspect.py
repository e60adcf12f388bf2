"""The engine inspector's JSON (TensorRT's documented layer-information format, 10.x and 11.x forms) and the refusal
of an FP16/INT8 build whose engine has no layer of that type. TensorRT itself is not needed: the JSON below is
written the way the inspector writes it for an engine built with ProfilingVerbosity.DETAILED."""

from __future__ import annotations

import json

import pytest

from sk_deploy.engines.inspect import (
    InspectionError,
    PrecisionSummary,
    check_requested,
    layer_precision,
    summarize,
    type_of,
)


def tensor(name: str, dims: list[int], kind: str, trt11: bool) -> dict:
    """One Inputs/Outputs entry: TensorRT 10's "Format/Datatype" string, or 11's "Format" + "DataType"."""
    formats = {"FP32": ("Row major linear FP32", "Float"),
               "FP16": ("Channel major FP16 format where channel % 8 == 0", "Half"),
               "INT8": ("Thirty-two wide channel vectorized row major Int8 format", "Int8")}
    text, datatype = formats[kind]
    if trt11:
        return {"Name": name, "Location": "Device", "Dimensions": dims, "Format": text, "DataType": datatype}
    return {"Name": name, "Location": "Device", "Dimensions": dims, "Format/Datatype": text}


def engine_json(trt11: bool, kinds: dict[str, str] | None = None) -> str:
    """A small SK-like engine: input reformat, quantize, two convolutions, the Select arithmetic, a pool, the
    classifier; ``kinds`` overrides the type of a layer's tensors (e.g. everything FP32)."""
    kinds = kinds or {}

    def k(layer: str, default: str) -> str:
        return kinds.get(layer, kinds.get("*", default))

    t = lambda *a: tensor(*a, trt11=trt11)  # noqa: E731
    layers = [
        {"Name": "Reformatting CopyNode for Input Tensor 0 to quantize", "LayerType": "Reformat",
         "Inputs": [t("input", [-1, 3, 64, 64], "FP32")], "Outputs": [t("in16", [-1, 3, 64, 64], k("q", "FP16"))]},
        {"Name": "node_Conv_1 + node_relu_2", "LayerType": "CaskConvolution",
         "Inputs": [t("q", [-1, 3, 64, 64], k("conv1", "INT8"))],
         "Outputs": [t("c1", [-1, 64, 32, 32], k("conv1", "INT8"))],
         "ParameterType": "Convolution", "Kernel": [7, 7], "Stride": [2, 2], "OutMaps": 64, "NbGroups": 1,
         "Weights": {"Type": "Int8" if k("conv1", "INT8") == "INT8" else "Float", "Count": 9408},
         "Bias": {"Type": "Float", "Count": 64}, "TacticName": "sm90_xmma_fprop_implicit_gemm_int8"},
        {"Name": "node_Conv_3", "LayerType": "CaskConvolution",
         "Inputs": [t("c1", [-1, 64, 32, 32], k("conv2", "INT8"))],
         "Outputs": [t("c2", [-1, 64, 32, 32], k("conv2", "FP16"))],
         "Weights": {"Type": "Int8" if k("conv2", "INT8") == "INT8" else "Float", "Count": 36864}},
        {"Name": "PWN(node_Sigmoid_4, node_Mul_5, node_Add_6)", "LayerType": "PointWiseV2",
         "Inputs": [t("c2", [-1, 64, 32, 32], k("select", "FP16")), t("a", [-1, 64, 1, 1], k("select", "FP16"))],
         "Outputs": [t("v", [-1, 64, 32, 32], k("select", "FP16"))]},
        {"Name": "node_GlobalAveragePool_7", "LayerType": "CaskPooling",
         "Inputs": [t("v32", [-1, 64, 32, 32], "FP32")], "Outputs": [t("p", [-1, 64, 1, 1], "FP32")]},
        {"Name": "node_Gemm_8", "LayerType": "CaskGemmMatrixMultiply",
         "Inputs": [t("p16", [-1, 64], k("fc", "FP16"))], "Outputs": [t("logits16", [-1, 1000], k("fc", "FP16"))],
         "Weights": {"Type": "Half" if k("fc", "FP16") == "FP16" else "Float", "Count": 64000}},
        {"Name": "shape_of_input", "LayerType": "NoOp", "Inputs": [], "Outputs": []},
    ]
    io = ({"I/O Tensors": [{"Name": "input", "IOMode": "Input", "DataType": "Float"},
                           {"Name": "logits", "IOMode": "Output", "DataType": "Float"}]}
          if trt11 else {"Bindings": ["input", "logits"]})
    return json.dumps({"Layers": layers, **io})


@pytest.mark.parametrize("trt11", [False, True], ids=["trt10", "trt11"])
def test_shares_of_an_int8_fp16_engine(trt11: bool) -> None:
    summary = summarize(engine_json(trt11))
    assert summary.layers == 7 and summary.unknown_layers == 1
    assert summary.counts == {"INT8": 2, "FP16": 3, "FP32": 1}
    assert summary.layer_share["INT8"] == pytest.approx(2 / 6, abs=1e-4)
    # compute: weights x output positions for the convolutions and the classifier, elements for the rest
    conv = 9408 * 32 * 32 + 36864 * 32 * 32
    rest = {"FP16": 3 * 64 * 64 + 64 * 32 * 32 + 64000, "FP32": 64}
    total = conv + rest["FP16"] + rest["FP32"]
    assert summary.compute_share["INT8"] == pytest.approx(conv / total, abs=1e-4)
    assert summary.compute_share["FP32"] == pytest.approx(64 / total, abs=1e-4)
    assert summary.float32_layers == ["node_GlobalAveragePool_7"]
    assert f"INT8 {2 / 6:.0%} of layers / {conv / total:.0%} of compute" in summary.line()
    check_requested(summary, "int8")
    check_requested(summary, "fp16")
    assert PrecisionSummary(**json.loads(json.dumps(summary.to_dict()))).line() == summary.line()


@pytest.mark.parametrize("trt11", [False, True], ids=["trt10", "trt11"])
def test_an_engine_that_came_out_fp32_is_refused(trt11: bool) -> None:
    summary = summarize(engine_json(trt11, {"*": "FP32"}))
    assert summary.counts == {"FP32": 6} and summary.compute_share["FP32"] == 1.0
    for precision, wanted in [("fp16", "FP16"), ("int8", "INT8")]:
        with pytest.raises(InspectionError, match=f"the {precision} engine built from model.x.onnx has no {wanted} "
                                                  "layer .*the engine was not written"):
            check_requested(summary, precision, "model.x.onnx")
    check_requested(summary, "fp32")  # nothing asked of an fp32 build


def test_an_int8_build_with_no_int8_layer_is_refused_even_with_fp16() -> None:
    summary = summarize(engine_json(True, {"conv1": "FP16", "conv2": "FP16"}))
    assert "INT8" not in summary.counts and summary.counts["FP16"] == 5
    check_requested(summary, "fp16")
    with pytest.raises(InspectionError, match="has no INT8 layer"):
        check_requested(summary, "int8")


def test_names_only_and_malformed_answers() -> None:
    with pytest.raises(InspectionError, match=r"layer names only: build it with ProfilingVerbosity\.DETAILED"):
        summarize(json.dumps({"Layers": ["node_Conv_1 + node_relu_2", "node_Gemm_8"], "Bindings": ["input"]}))
    with pytest.raises(InspectionError, match="no \"Layers\" list"):
        summarize("{}")


def test_type_words() -> None:
    assert type_of({"Format/Datatype": "Row major linear BFloat16 format"}) == "BF16"
    assert type_of({"Format": "Row major linear", "DataType": "FP8"}) == "FP8"
    assert type_of({"Format/Datatype": "Row major linear Int32"}) is None
    assert layer_precision({"Inputs": [], "Outputs": [], "Weights": {"Type": "Half", "Count": 10}}) == "FP16"


@pytest.mark.tensorrt
def test_int8_engine_of_the_mixed_graph_is_int8_and_fp16(small_bundle, tmp_path) -> None:
    """Where TensorRT exists: the INT8 + FP16 graph builds to an engine with INT8 and FP16 layers and FP32
    left to the reductions (a sliver of the compute); the figures are in the manifest."""
    import shutil

    from sk_deploy.engines.tensorrt import BuildRequest, build_engine
    from sk_deploy.precision.pipeline import quantize_bundle
    from sk_deploy.settings.precision import QuantizeSettings
    from tests.conftest import make_image

    copy = shutil.copytree(small_bundle.path, tmp_path / "bundle")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(16):
        make_image(photos / f"p{i}.jpg", size=(96, 80), seed=i)
    quantize_bundle(QuantizeSettings(bundle=copy, precision="int8", target="tensorrt", images=photos, calib_size=8,
                                     holdout_size=8, gate=False, measure_speed=False))
    _, entry = build_engine(BuildRequest(copy, precision="int8", batch_profile=(1, 4, 8)))
    shares = entry["layer_precision"]["compute_share"]
    assert shares["INT8"] > 0.5 and entry["layer_precision"]["counts"].get("FP16", 0) > 0
    assert shares["FP32"] < 0.05, entry["layer_precision"]
