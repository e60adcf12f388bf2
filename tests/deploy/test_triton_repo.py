"""`sk-deploy triton-repo`: the written config.pbtxt parsed with Triton's own protobuf schema, field by field,
against the graph that was copied (read back with onnx and ONNX Runtime), for fp32, fp16, both int8 forms, a
fused-preprocess bundle and a TensorRT plan; and every refusal, which leaves the repository as it was."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc
from typer.testing import CliRunner

from sk_deploy.bundle import Bundle
from sk_deploy.cli import app
from sk_deploy.deploy.triton import TritonRequest, plan_repository
from sk_deploy.labels import imagenet_labels
from sk_deploy.precision.pipeline import quantize_bundle
from sk_deploy.settings.precision import QuantizeSettings

from ..conftest import make_image

runner = CliRunner()
ENGINE = "model.fp16.h100-80gb-hbm3.trt10.8.plan"


@pytest.fixture(scope="module")
def full_bundle(small_bundle: Bundle, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small bundle with every precision graph (quickly made, gates off) and a TensorRT plan entry.

    No GPU here, so the plan is a stand-in file recorded the way `sk-deploy build` records one: the exporter
    only copies it and reads its manifest entry (precision, profile, TensorRT version, GPU, source graph).
    """
    folder = tmp_path_factory.mktemp("triton")
    pictures = folder / "pictures"
    pictures.mkdir()
    for i in range(6):
        make_image(pictures / f"p{i}.jpg", size=(96, 80), seed=i)
    path = folder / "bundle"
    shutil.copytree(small_bundle.path, path)
    quantize_bundle(QuantizeSettings(bundle=path, precision="fp16", holdout_size=2, measure_speed=False))
    for target in ("tensorrt", "cpu"):
        quantize_bundle(QuantizeSettings(bundle=path, precision="int8", target=target, images=pictures, calib_size=4,
                                        holdout_size=2, gate=False, measure_speed=False))
    bundle = Bundle.open(path)
    (path / ENGINE).write_bytes(b"stand-in serialized engine " * 100)
    bundle.add_file(ENGINE, role="engine", precision="fp16",
                    source={"file": "model.fp16.onnx", "sha256": bundle.manifest["files"]["model.fp16.onnx"]["sha256"]},
                    tensorrt={"version": "10.8.0.43"}, gpu={"name": "NVIDIA H100 80GB HBM3",
                                                            "compute_capability": [9, 0]},
                    hardware_compat="none", profile={"input": "input", "min": 1, "opt": 8, "max": 16})
    bundle.save()
    return path


def parse(model_dir: Path) -> mc.ModelConfig:
    """config.pbtxt through Triton's ModelConfig schema (an unknown field or a bad enum fails here)."""
    return text_format.Parse((model_dir / "config.pbtxt").read_text(), mc.ModelConfig())


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def triton_repo(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["triton-repo", *args])
    return result.exit_code, result.output


def check_matches_graph(config: mc.ModelConfig, model_file: Path) -> None:
    """Names, element types and dims of the config against the copied graph, as onnx and ONNX Runtime see it."""
    graph = onnx.load(str(model_file), load_external_data=False).graph
    to_triton = {onnx.TensorProto.FLOAT: mc.TYPE_FP32, onnx.TensorProto.UINT8: mc.TYPE_UINT8}
    (inp,), (out,) = config.input, config.output
    assert inp.name == graph.input[0].name and out.name == graph.output[0].name
    assert inp.data_type == to_triton[graph.input[0].type.tensor_type.elem_type]
    assert out.data_type == to_triton[graph.output[0].type.tensor_type.elem_type]
    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    assert list(inp.dims) == session.get_inputs()[0].shape[1:]
    assert list(out.dims) == session.get_outputs()[0].shape[1:] == [1000]
    assert isinstance(session.get_inputs()[0].shape[0], str)  # the batch axis Triton adds is dynamic
    dtype = np.uint8 if inp.data_type == mc.TYPE_UINT8 else np.float32
    batch = np.zeros((2, *inp.dims), dtype=dtype)
    assert session.run(None, {inp.name: batch})[0].shape == (2, 1000)


def test_fp32_repository_every_field(full_bundle: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    code, output = triton_repo(str(full_bundle), "--out", str(repo), "--max-batch", "16",
                               "--preferred-batch-sizes", "8,4", "--max-queue-delay-ms", "0.5", "--instances", "2")
    assert code == 0, output
    model_dir = repo / "skresnet18"
    assert sorted(p.name for p in repo.iterdir()) == ["skresnet18"]  # no staging left behind
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "config.pbtxt", "labels.txt"]
    assert sha256(model_dir / "1" / "model.onnx") == Bundle.open(full_bundle).manifest["files"]["model.onnx"]["sha256"]
    config = parse(model_dir)
    assert config.name == "skresnet18" and config.platform == "onnxruntime_onnx" and not config.backend
    assert config.max_batch_size == 16
    (inp,), (out,) = config.input, config.output
    assert (inp.name, inp.data_type, list(inp.dims), inp.format) == ("input", mc.TYPE_FP32, [3, 64, 64],
                                                                      mc.ModelInput.FORMAT_NCHW)
    assert (out.name, out.data_type, list(out.dims), out.label_filename) == ("logits", mc.TYPE_FP32, [1000],
                                                                              "labels.txt")
    assert config.WhichOneof("scheduling_choice") == "dynamic_batching"
    assert list(config.dynamic_batching.preferred_batch_size) == [4, 8]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    (group,) = config.instance_group
    assert group.kind == mc.ModelInstanceGroup.KIND_GPU and group.count == 2 and not group.gpus
    assert not config.HasField("optimization")
    labels = (model_dir / "labels.txt").read_text().splitlines()
    assert labels == imagenet_labels() and len(labels) == 1000 and labels[0] == "tench"
    check_matches_graph(config, model_dir / "1" / "model.onnx")


def test_defaults_take_the_bundle_profile(full_bundle: Path, tmp_path: Path) -> None:
    code, output = triton_repo(str(full_bundle), "--out", str(tmp_path), "--name", "sk18-cpu", "--instance-kind", "cpu")
    assert code == 0, output
    config = parse(tmp_path / "sk18-cpu")
    profile_max = Bundle.open(full_bundle).manifest["input"]["batch"]["max"]
    assert config.name == "sk18-cpu" and config.max_batch_size == profile_max == 32
    assert list(config.dynamic_batching.preferred_batch_size) == []
    assert config.dynamic_batching.max_queue_delay_microseconds == 2000
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU and config.instance_group[0].count == 1


@pytest.mark.parametrize(
    ("precision", "device", "expected_file"),
    [("fp16", "gpu", "model.fp16.onnx"), ("int8", "gpu", "model.int8.onnx"), ("int8", "cpu", "model.int8-cpu.onnx")],
)
def test_precision_graphs_keep_float32_io(
    full_bundle: Path, tmp_path: Path, precision: str, device: str, expected_file: str
) -> None:
    code, output = triton_repo(str(full_bundle), "--out", str(tmp_path), "--precision", precision,
                               "--instance-kind", device)
    assert code == 0, output
    model_file = tmp_path / "skresnet18" / "1" / "model.onnx"
    assert sha256(model_file) == Bundle.open(full_bundle).manifest["files"][expected_file]["sha256"]
    config = parse(tmp_path / "skresnet18")
    assert config.platform == "onnxruntime_onnx"
    assert config.input[0].data_type == config.output[0].data_type == mc.TYPE_FP32
    graph = onnx.load(str(model_file)).graph
    if precision == "fp16":  # the compute is float16, the interface float32
        assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer)
    else:
        assert any(n.op_type == "QuantizeLinear" for n in graph.node)
    check_matches_graph(config, model_file)
    if precision == "int8" and device == "gpu":
        assert "without int8 kernels" in output  # the CUDA provider warning


def test_ort_tensorrt_accelerator(full_bundle: Path, tmp_path: Path) -> None:
    code, output = triton_repo(str(full_bundle), "--out", str(tmp_path), "--precision", "int8", "--ort-tensorrt")
    assert code == 0, output
    config = parse(tmp_path / "skresnet18")
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    assert dict(accelerator.parameters) == {"precision_mode": "INT8", "max_workspace_size_bytes": str(4 << 30)}
    assert "without int8 kernels" not in output


def test_fused_preprocess_bundle_takes_uint8_nhwc(fused_bundle: Bundle, tmp_path: Path) -> None:
    code, output = triton_repo(str(fused_bundle.path), "--out", str(tmp_path))
    assert code == 0, output
    config = parse(tmp_path / "skresnet18")
    (inp,) = config.input
    assert (inp.data_type, list(inp.dims), inp.format) == (mc.TYPE_UINT8, [64, 64, 3], mc.ModelInput.FORMAT_NHWC)
    assert config.output[0].data_type == mc.TYPE_FP32
    check_matches_graph(config, tmp_path / "skresnet18" / "1" / "model.onnx")


def test_tensorrt_plan(full_bundle: Path, tmp_path: Path) -> None:
    code, output = triton_repo(str(full_bundle), "--out", str(tmp_path), "--backend", "tensorrt", "--precision", "fp16",
                               "--preferred-batch-sizes", "16")
    assert code == 0, output
    model_dir = tmp_path / "skresnet18"
    assert sorted(p.name for p in (model_dir / "1").iterdir()) == ["model.plan"]
    assert (model_dir / "1" / "model.plan").read_bytes() == (full_bundle / ENGINE).read_bytes()
    config = parse(model_dir)
    assert config.platform == "tensorrt_plan"
    assert config.max_batch_size == 16  # the engine's profile, not the bundle's 32
    assert list(config.dynamic_batching.preferred_batch_size) == [16]
    assert config.input[0].data_type == config.output[0].data_type == mc.TYPE_FP32  # the fp16 graph's I/O
    assert list(config.input[0].dims) == [3, 64, 64] and list(config.output[0].dims) == [1000]
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU
    assert "TensorRT 10.8.0.43" in output and "H100" in output  # the version/GPU warning


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--precision", "fp16"], "no fp16 graph model.fp16.onnx for a GPU instance; make it: sk-deploy quantize "
                                  "BUNDLE --precision fp16"),
        (["--precision", "int8"], "--precision int8 --target tensorrt --images PHOTOS"),
        (["--precision", "int8", "--instance-kind", "cpu"], "model.int8-cpu.onnx (or model.int8.onnx)"),
        (["--backend", "tensorrt"], "no fp32 TensorRT engine; build one"),
        (["--backend", "tensorrt", "--instance-kind", "cpu"], "a TensorRT plan runs on a GPU only"),
        (["--max-batch", "64"], "--max-batch 64 is above the batch profile's maximum 32"),
        (["--max-batch", "8", "--preferred-batch-sizes", "16"], "--preferred-batch-sizes 16: each must be 1 to max "
                                                          "batch 8"),
        (["--name", "a/b"], "model name 'a/b'"),
        (["--instance-kind", "cpu", "--ort-tensorrt"], "--ort-tensorrt is ONNX Runtime's TensorRT provider"),
        (["--engine", "model.plan"], "--engine picks a TensorRT plan"),
    ],
)
def test_refusals_are_one_line_and_write_nothing(small_bundle: Bundle, tmp_path: Path, args: list[str],
                                                 message: str) -> None:
    repo = tmp_path / "repo"
    code, output = triton_repo(str(small_bundle.path), "--out", str(repo), *args)
    assert code == 1, output
    assert message in " ".join(output.split()) and output.count("error:") == 1
    assert not repo.exists()


def test_existing_model_needs_force_and_other_models_stay(full_bundle: Path, tmp_path: Path) -> None:
    other = tmp_path / "other-model" / "1"
    other.mkdir(parents=True)
    assert triton_repo(str(full_bundle), "--out", str(tmp_path), "--max-batch", "8")[0] == 0
    before = (tmp_path / "skresnet18" / "config.pbtxt").read_text()
    code, output = triton_repo(str(full_bundle), "--out", str(tmp_path), "--max-batch", "4")
    assert code == 1 and "directory is not empty; pass --force" in " ".join(output.split())
    assert (tmp_path / "skresnet18" / "config.pbtxt").read_text() == before
    assert triton_repo(str(full_bundle), "--out", str(tmp_path), "--max-batch", "4", "--force")[0] == 0
    assert parse(tmp_path / "skresnet18").max_batch_size == 4
    assert other.is_dir() and sorted(p.name for p in tmp_path.iterdir()) == ["other-model", "skresnet18"]


def test_engine_of_another_precision_and_changed_files_are_refused(full_bundle: Path, tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="is a fp16 engine; pass --precision fp16"):
        plan_repository(TritonRequest(full_bundle, tmp_path, backend="tensorrt", precision="fp32", engine=ENGINE))
    copy = tmp_path / "bundle"
    shutil.copytree(full_bundle, copy)
    with open(copy / "model.fp16.onnx", "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(RuntimeError, match="sha256 differs from the manifest"):
        plan_repository(TritonRequest(copy, tmp_path / "repo", precision="fp16"))


@pytest.mark.parametrize(("precision", "expected_file", "bf16"),
                         [("fp32", "model.onnx", False), ("bf16", "model.onnx", True),
                          ("int8", "model.int8.onnx", False)])
def test_openvino_repository(full_bundle: Path, tmp_path: Path, precision: str, expected_file: str,
                             bf16: bool) -> None:
    code, output = triton_repo(str(full_bundle), "--out", str(tmp_path), "--backend", "openvino", "--precision",
                               precision)
    assert code == 0, output
    model_dir = tmp_path / "skresnet18"
    config = parse(model_dir)  # backend, default_model_filename and parameters through Triton's own schema
    assert config.backend == "openvino" and not config.platform
    assert config.default_model_filename == "model.onnx"
    assert sha256(model_dir / "1" / "model.onnx") == Bundle.open(full_bundle).manifest["files"][expected_file]["sha256"]
    (group,) = config.instance_group
    assert group.kind == mc.ModelInstanceGroup.KIND_CPU  # openvino's default device
    parameters = {key: value.string_value for key, value in config.parameters.items()}
    assert parameters == {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", **({"HINT_BF16": "YES"} if bf16 else {})}
    assert ("no parameter pinning f32" in output) != bf16  # fp32 and int8 say what Triton's backend cannot pin
    check_matches_graph(config, model_dir / "1" / "model.onnx")


@pytest.mark.parametrize(("args", "message"), [
    (("--backend", "openvino", "--instance-kind", "gpu"), "Triton's OpenVINO backend runs on the CPU"),
    (("--backend", "openvino", "--precision", "fp16"), "the openvino backend serves fp32, bf16, int8, not fp16"),
    (("--precision", "bf16"), "bf16 is served by Triton's openvino backend only"),
])
def test_openvino_refusals_are_one_line(full_bundle: Path, tmp_path: Path, args: tuple[str, ...],
                                        message: str) -> None:
    code, output = triton_repo(str(full_bundle), "--out", str(tmp_path / "repo"), *args)
    assert code == 1 and message in output and not (tmp_path / "repo").exists()


def test_python_backend_runs_the_bundle_through_the_predictor(full_bundle: Path, tmp_path: Path) -> None:
    code, output = triton_repo(str(full_bundle), "--out", str(tmp_path), "--backend", "python", "--precision", "int8",
                               "--runtime", "ort-cpu", "--max-batch", "16", "--instances", "2")
    assert code == 0, output
    model_dir = tmp_path / "skresnet18"
    config = parse(model_dir)
    assert config.backend == "python" and not config.platform and config.default_model_filename == "model.py"
    parameters = {key: value.string_value for key, value in config.parameters.items()}
    assert parameters == {"runtime": "ort-cpu", "precision": "int8"}
    (inp,), (out,) = config.input, config.output
    assert (inp.name, inp.data_type, list(inp.dims)) == ("input", mc.TYPE_FP32, [3, 64, 64])
    assert (out.name, out.data_type, list(out.dims), out.label_filename) == ("logits", mc.TYPE_FP32, [1000],
                                                                              "labels.txt")
    assert config.max_batch_size == 16 and config.WhichOneof("scheduling_choice") == "dynamic_batching"
    (group,) = config.instance_group
    assert group.kind == mc.ModelInstanceGroup.KIND_CPU and group.count == 2  # the Python backend's default kind
    # the whole bundle, every file as the manifest records it, and a model.py naming the class that serves it
    copied = Bundle.open(model_dir / "1" / "bundle")
    for name, entry in Bundle.open(full_bundle).manifest["files"].items():
        assert sha256(model_dir / "1" / "bundle" / name) == entry["sha256"] == copied.entry(name)["sha256"]
    source = (model_dir / "1" / "model.py").read_text()
    assert "from sk_deploy.deploy.triton_python import ClassifierModel as TritonPythonModel" in source
    compile(source, "model.py", "exec")
    assert "backend python from the bundle (sk-deploy's Predictor, ort-cpu int8)" in " ".join(output.split())
    assert not (tmp_path / "skresnet18_ensemble").exists()


@pytest.mark.parametrize("fused", [False, True], ids=["float-nchw", "fused-uint8-nhwc"])
def test_ensemble_takes_encoded_pictures(small_bundle: Bundle, fused_bundle: Bundle, tmp_path: Path,
                                         fused: bool) -> None:
    bundle = fused_bundle if fused else small_bundle
    code, output = triton_repo(str(bundle.path), "--out", str(tmp_path), "--instance-kind", "cpu", "--ensemble",
                               "--max-pixels", "1000000", "--max-aspect-ratio", "4", "--max-picture-mb", "2")
    assert code == 0, output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["skresnet18", "skresnet18_ensemble",
                                                          "skresnet18_preprocess"]
    model = parse(tmp_path / "skresnet18")
    assert model.platform == "onnxruntime_onnx"  # the ensemble runs the model of whichever backend
    preprocess = parse(tmp_path / "skresnet18_preprocess")
    assert preprocess.backend == "python" and preprocess.max_batch_size == model.max_batch_size
    (picture,), (tensor,) = preprocess.input, preprocess.output
    assert (picture.name, picture.data_type, list(picture.dims)) == ("image", mc.TYPE_STRING, [1])
    assert (tensor.name, tensor.data_type, list(tensor.dims)) == (model.input[0].name, model.input[0].data_type,
                                                                  list(model.input[0].dims))
    parameters = {key: value.string_value for key, value in preprocess.parameters.items()}
    described = bundle.preprocess.to_dict()
    del described["layout"]
    assert json.loads(parameters.pop("preprocess")) == described
    assert parameters == {"uint8_nhwc": "true" if fused else "false", "max_pixels": "1000000", "max_aspect": "4",
                          "max_bytes": str(2 << 20)}
    assert preprocess.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    assert "PictureModel as TritonPythonModel" in (tmp_path / "skresnet18_preprocess" / "1" / "model.py").read_text()
    ensemble = parse(tmp_path / "skresnet18_ensemble")
    assert ensemble.platform == "ensemble" and ensemble.max_batch_size == model.max_batch_size
    assert (ensemble.input[0].name, ensemble.input[0].data_type) == ("image", mc.TYPE_STRING)
    assert (ensemble.output[0].name, ensemble.output[0].label_filename) == ("logits", "labels.txt")
    assert (tmp_path / "skresnet18_ensemble" / "labels.txt").read_text().splitlines() == imagenet_labels()
    first, second = ensemble.ensemble_scheduling.step
    assert (first.model_name, dict(first.input_map)) == ("skresnet18_preprocess", {"image": "image"})
    assert (second.model_name, dict(second.output_map)) == ("skresnet18", {"logits": "logits"})
    assert dict(first.output_map)[model.input[0].name] == dict(second.input_map)[model.input[0].name]
    assert [p.name for p in (tmp_path / "skresnet18_ensemble" / "1").iterdir()] == []


@pytest.mark.parametrize(("args", "message"), [
    (("--runtime", "ort-cpu"), "--runtime picks the backend sk-deploy's Predictor runs inside Triton's Python "
                               "backend: add --backend python"),
    (("--backend", "python", "--runtime", "ort-cpu", "--precision", "bf16"), "the ort-cpu backend serves"),
    (("--backend", "python", "--precision", "fp16"), "no fp16 graph model.fp16.onnx"),
    (("--backend", "python", "--runtime", "tensorrt"), "no fp32 TensorRT engine for --runtime tensorrt"),
])
def test_python_backend_refusals_are_one_line(small_bundle: Bundle, tmp_path: Path, args: tuple[str, ...],
                                              message: str) -> None:
    code, output = triton_repo(str(small_bundle.path), "--out", str(tmp_path / "repo"), *args)
    assert code == 1 and message in " ".join(output.split()) and output.count("error:") == 1
    assert not (tmp_path / "repo").exists()


def test_an_unknown_runtime_is_a_usage_error(small_bundle: Bundle, tmp_path: Path) -> None:
    code, output = triton_repo(str(small_bundle.path), "--out", str(tmp_path / "repo"), "--backend", "python",
                               "--runtime", "onnx")
    assert code == 2 and "--runtime: 'onnx' is not one of auto, " in " ".join(output.split())
    assert not (tmp_path / "repo").exists()


def test_ensemble_checks_every_directory_before_writing(small_bundle: Bundle, tmp_path: Path) -> None:
    (tmp_path / "skresnet18_ensemble").mkdir()
    (tmp_path / "skresnet18_ensemble" / "kept").write_text("x")
    code, output = triton_repo(str(small_bundle.path), "--out", str(tmp_path), "--backend", "python", "--ensemble")
    assert code == 1 and "skresnet18_ensemble: directory is not empty; pass --force" in " ".join(output.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["skresnet18_ensemble"]  # nothing half written
