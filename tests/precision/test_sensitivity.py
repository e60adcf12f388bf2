"""`sk-deploy quantize --auto-exclude` and --high-precision on a real skresnet18 bundle at 64x64."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto
from typer.testing import CliRunner

from sk_deploy.bundle import Bundle
from sk_deploy.cli import app
from sk_deploy.precision import accuracy
from sk_deploy.precision.pipeline import quantize_bundle
from sk_deploy.precision.sensitivity import keep_float, quantized_layers
from sk_deploy.settings.precision import QuantizeSettings

from ..conftest import make_image

runner = CliRunner()


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sensitivity-photos")
    for i in range(24):
        make_image(folder / f"p{i:02d}.jpg", size=(96, 80), seed=100 + i)
    return folder


@pytest.fixture()
def bundle_dir(small_bundle: Bundle, tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(small_bundle.path, copy)
    return copy


def request(bundle_dir: Path, photos: Path, **options) -> QuantizeSettings:
    return QuantizeSettings(**{"bundle": bundle_dir, "precision": "int8", "target": "tensorrt", "images": photos,
                               "calib_size": 12, "holdout_size": 12, "gate": False,
                               "measure_speed": False, **options})


def dtypes(path: Path) -> set[int]:
    return {t.data_type for t in onnx.load(path).graph.initializer}


def test_high_precision_choices_and_refusals(bundle_dir: Path, photos: Path) -> None:
    mixed = quantize_bundle(request(bundle_dir, photos))
    assert mixed.details["high_precision"]["high_precision"] == "fp16"
    assert mixed.details["high_precision"]["float32_full_maps"] == []
    assert TensorProto.FLOAT16 in dtypes(bundle_dir / "model.int8.onnx")
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert manifest["stages"]["precision"]["model.int8.onnx"]["high_precision"]["opset"] == 19
    plain = quantize_bundle(request(bundle_dir, photos, high_precision="fp32"))
    assert plain.written and TensorProto.FLOAT16 not in dtypes(bundle_dir / "model.int8.onnx")
    cpu = quantize_bundle(request(bundle_dir, photos, target="cpu"))
    assert cpu.details["high_precision"]["high_precision"] == "fp32"
    for args, code, message in [
        (["--target", "cpu", "--high-precision", "fp16"], 1, "--high-precision fp16 is for the TensorRT form"),
        (["--high-precision", "bf16"], 2, "Invalid value for '--high-precision'"),  # not a choice: a usage error
    ]:
        result = runner.invoke(app, ["quantize", str(bundle_dir), "--precision", "int8", "--images", str(photos),
                                     *args])
        assert result.exit_code == code and message in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["quantize", str(bundle_dir), "--precision", "fp16", "--auto-exclude"])
    assert result.exit_code == 1 and "--auto-exclude searches the quantized layers of an int8 graph" in result.output


def test_keep_float_undoes_one_layers_quantization(small_bundle: Bundle, bundle_dir: Path, photos: Path) -> None:
    quantize_bundle(request(bundle_dir, photos, high_precision="fp32"))
    qdq = onnx.load(bundle_dir / "model.int8.onnx")
    layers = quantized_layers(qdq)
    kept = keep_float(qdq, onnx.load(small_bundle.file("model.onnx")), layers[:2])
    onnx.checker.check_model(kept, full_check=True)
    assert quantized_layers(kept) == layers[2:]
    count = {op: sum(n.op_type == op for n in kept.graph.node) for op in ("QuantizeLinear", "DequantizeLinear")}
    assert 0 < count["DequantizeLinear"] < sum(n.op_type == "DequantizeLinear" for n in qdq.graph.node)


def test_auto_exclude_passes_a_gate_the_full_graph_misses(bundle_dir: Path, photos: Path, monkeypatch) -> None:
    first = quantize_bundle(request(bundle_dir, photos))
    start = first.accuracy.agreement.cosine_mean
    assert start < 0.9999
    # a gate halfway from the all-int8 figure to 1: missed by the full graph, met by the float16 one
    gate = round(start + (1 - start) / 2, 6)
    monkeypatch.setitem(accuracy.GATES, "int8", accuracy.Gate(min_cosine=gate))
    before = (bundle_dir / "model.int8.onnx").read_bytes()
    tensorrt_form = ["--precision", "int8", "--target", "tensorrt", "--images", str(photos)]
    refused = runner.invoke(app, ["quantize", str(bundle_dir), *tensorrt_form, "--calib-size", "12", "--holdout-size",
                                  "12"])
    assert refused.exit_code == 1 and "misses its accuracy gate" in refused.output
    assert (bundle_dir / "model.int8.onnx").read_bytes() == before
    result = runner.invoke(app, ["quantize", str(bundle_dir), *tensorrt_form, "--calib-size", "12", "--holdout-size",
                                 "12", "--auto-exclude"])
    assert result.exit_code == 0, result.output
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    record = manifest["stages"]["precision"]["model.int8.onnx"]
    search = record["auto_exclude"]
    assert search["passed"] and record["accuracy"]["passed"] and record["accuracy"]["cosine_mean"] >= gate
    assert search["start"]["cosine_mean"] == pytest.approx(start, abs=1e-6)
    excluded = [e["node"] for e in search["excluded"]]
    assert 0 < len(excluded) < search["candidates"]
    assert search["evaluations"] < search["every_layer_evaluations"] == search["candidates"]
    assert any(e["cosine_after"] is not None for e in search["excluded"])
    # the layers reported are the ones the written graph left unquantized
    written = onnx.load(bundle_dir / "model.int8.onnx")
    assert set(excluded).isdisjoint(quantized_layers(written)) and len(quantized_layers(written)) > 0
    assert f"{len(excluded)} of {search['candidates']} quantized layers kept float" in result.output
    # named as the PyTorch module a user knows (a Conv's weight carries its path), the node beside it
    first = search["excluded"][0]
    assert f"{first['layer']} (" in result.output and first["node"] in result.output
    assert all(e["layer"] != e["node"] and "." in e["layer"] for e in search["excluded"] if e["op_type"] == "Conv")


def _legacy_conv_pair(tmp_path: Path) -> tuple[onnx.ModelProto, onnx.ModelProto]:
    """Two convolutions named as torch's legacy exporter names them (bias ``onnx::Conv_912``, depthwise second),
    and their U8S8 Q/DQ form from ONNX Runtime's quantizer, which names each bias's DequantizeLinear output after
    the float bias."""
    import numpy as np
    from onnx import helper, numpy_helper
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=shape).astype(np.float32), name) for name, shape in (
        ("onnx::Conv_911", (8, 3, 3, 3)), ("onnx::Conv_912", (8,)), ("onnx::Conv_914", (8, 1, 3, 3)),
        ("onnx::Conv_915", (8,)))]
    nodes = [helper.make_node("Conv", ["input", "onnx::Conv_911", "onnx::Conv_912"], ["a"], name="/_conv_stem/Conv",
                              pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["a", "onnx::Conv_914", "onnx::Conv_915"], ["logits"], group=8,
                              name="/_blocks.0/_depthwise_conv/Conv", pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "legacy", [helper.make_tensor_value_info("input", TensorProto.FLOAT,
                                                                              [None, 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save_model(model, tmp_path / "float.onnx")

    class Reader:
        def __init__(self) -> None:
            self.batches = iter([{"input": rng.normal(size=(2, 3, 8, 8)).astype(np.float32)} for _ in range(2)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(tmp_path / "float.onnx", tmp_path / "qdq.onnx", Reader(), quant_format=QuantFormat.QDQ,
                    per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return model, onnx.load(tmp_path / "qdq.onnx")


def test_probe_and_keep_float_on_legacy_exporter_names(tmp_path: Path) -> None:
    import numpy as np
    import onnxruntime as ort

    from sk_deploy.precision.sensitivity import layer_sensitivity, probe_graph, separate

    model, qdq = _legacy_conv_pair(tmp_path)
    dq_outputs = {o for n in qdq.graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    assert "onnx::Conv_912" in dq_outputs  # the quantizer's naming that made the probe define it twice
    separated = separate(qdq, model)
    assert "onnx::Conv_912_dequantized" in {o for n in separated.graph.node for o in n.output}
    layers = quantized_layers(qdq)
    assert layers == ["/_conv_stem/Conv", "/_blocks.0/_depthwise_conv/Conv"]
    probe = probe_graph(qdq, model, layers)
    defined = [o for n in probe.graph.node for o in n.output] + [t.name for t in probe.graph.initializer]
    assert len(defined) == len(set(defined))  # each name defined once: ONNX Runtime loads it
    noise = layer_sensitivity(qdq, model, layers, np.random.default_rng(1).normal(size=(4, 3, 8, 8))
                              .astype(np.float32))
    assert all(-80 < db < 0 for db in noise.values())
    kept = keep_float(qdq, model, layers)  # both layers read float inputs, float weights and float biases again
    onnx.checker.check_model(kept, full_check=True)
    assert quantized_layers(kept) == []
    assert {"onnx::Conv_911", "onnx::Conv_912", "onnx::Conv_914", "onnx::Conv_915"} <= {
        t.name for t in kept.graph.initializer}
    feed = {"input": np.random.default_rng(2).normal(size=(1, 3, 8, 8)).astype(np.float32)}
    ort.InferenceSession(kept.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feed)


def test_layers_are_named_by_their_pytorch_module_path(small_bundle: Bundle) -> None:
    from sk_deploy.precision.sensitivity import layer_label

    model = onnx.load(small_bundle.file("model.onnx"))
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert layer_label(model, convs[0]) == "conv1"
    assert layer_label(model, convs[1]) == "layer1.0.conv1.paths.0.conv"
    add = next(n for n in model.graph.node if n.op_type == "Add")
    assert layer_label(model, add) == add.name  # no weight: the ONNX node
