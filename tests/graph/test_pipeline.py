"""export_bundle and verify_bundle: a complete bundle, its manifest, parity figures on generated and real
pictures, refusals, and nothing left behind when an export fails."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import save_file

from sk_deploy.bundle import Bundle, BundleError, sha256_file
from sk_deploy.compare import VerifyError, generated_images, image_files
from sk_deploy.graph.export import ExportError
from sk_deploy.graph.pipeline import BatchProfile, export_bundle, resolve_input
from sk_deploy.graph.verify import Thresholds, compare, verify_bundle
from sk_deploy.images import open_image
from sk_deploy.models import create_model, get_spec
from sk_deploy.models.reference import build_reference
from sk_deploy.models.weights import WeightsError
from sk_deploy.runners import onnx_cpu_runner
from sk_deploy.settings.graph import ExportSettings
from tests.graph.conftest import calibrate_bn

SIZE = (64, 64)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """skresnet18 with realistic BN statistics, saved as safetensors."""
    torch.manual_seed(3)
    model = calibrate_bn(create_model("skresnet18"), (3, *SIZE))
    path = tmp_path_factory.mktemp("weights") / "skresnet18.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory, checkpoint: Path) -> Bundle:
    out = tmp_path_factory.mktemp("bundles") / "skresnet18"
    messages: list[str] = []
    result, report = export_bundle(
        ExportSettings(model="skresnet18", out=out, weights=checkpoint, exporter="legacy", input_size=SIZE,
                      batch_profile="1:4:16"),
        progress=messages.append, onnx_runner=onnx_cpu_runner,
    )
    assert report is not None and report.passed, report
    assert any("exporting" in m for m in messages) and any("verifying" in m for m in messages)
    return result


def test_bundle_files_and_manifest(bundle: Bundle, checkpoint: Path) -> None:
    assert sorted(p.name for p in bundle.path.iterdir()) == ["manifest.json", "model.onnx", "model.raw.onnx"]
    reopened = Bundle.open(bundle.path)
    manifest = reopened.manifest
    assert manifest["model"]["name"] == "skresnet18"
    assert manifest["model"]["weights"] == {"source": "file", "path": str(checkpoint.resolve()),
                                            "sha256": sha256_file(checkpoint)}
    assert manifest["input"] == {"name": "input", "shape": ["batch", 3, 64, 64], "dtype": "float32",
                                 "layout": "NCHW", "batch": {"min": 1, "opt": 4, "max": 16}}
    assert manifest["output"] == {"name": "logits", "shape": ["batch", 1000], "dtype": "float32"}
    assert manifest["preprocess"]["crop"] == 64 and manifest["preprocess"]["resize"] == 73
    assert manifest["labels"]["classes"] == 1000
    for name in ("model.raw.onnx", "model.onnx"):
        assert manifest["files"][name]["sha256"] == sha256_file(bundle.path / name)
    stages = manifest["stages"]
    assert stages["export"]["exporter"] == "legacy" and stages["export"]["trace_batch"] == 5
    assert stages["optimize"]["sk_select"]["rewritten"] == 8
    assert manifest["files"]["model.onnx"]["nodes"] < manifest["files"]["model.raw.onnx"]["nodes"]
    verify = stages["verify"]
    assert verify["passed"] and verify["images"] == "generated (8)"
    for name in ("model.raw.onnx", "model.onnx"):
        figures = verify["files"][name]
        assert figures["max_abs"] <= 1e-4 and figures["min_cosine"] >= 0.9999
        assert figures["top1_agreement"] == 1.0 and figures["top5_overlap"] == 1.0


def test_verify_on_real_photos(bundle: Bundle, shared_data: Path) -> None:
    model = build_reference("skresnet18", bundle.manifest["model"]["weights"])
    report = verify_bundle(bundle, model, onnx_cpu_runner, images=shared_data / "imagenet-samples", limit=8, save=False)
    assert report.passed and report.count == 8
    assert all(f.max_abs <= 1e-4 and f.top1_agreement == 1.0 for f in report.files)


def test_tight_thresholds_fail_with_reasons(bundle: Bundle) -> None:
    model = build_reference("skresnet18", bundle.manifest["model"]["weights"])
    report = verify_bundle(bundle, model, onnx_cpu_runner, thresholds=Thresholds(max_abs=0.0, min_cosine=1.0),
                           save=False)
    assert not report.passed
    assert all(any(r.startswith("max abs error") for r in f.failures) for f in report.files)


def test_a_wrong_graph_fails_verification(bundle: Bundle, tmp_path: Path) -> None:
    """A cleaned graph whose SK gate weights were perturbed is caught."""
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("manifest.json", "model.raw.onnx"):
        (broken / name).write_bytes((bundle.path / name).read_bytes())
    model = onnx.load(str(bundle.path / "model.onnx"))
    gate = next(init for init in model.graph.initializer if "gate_weight" in init.name)
    array = onnx.numpy_helper.to_array(gate) * 1.5
    gate.CopyFrom(onnx.numpy_helper.from_array(array.astype(np.float32), gate.name))
    onnx.save(model, str(broken / "model.onnx"))
    copy = Bundle.open(broken)
    copy.add_file("model.onnx", role="model", input=bundle.manifest["files"]["model.onnx"]["input"])
    reference = build_reference("skresnet18", copy.manifest["model"]["weights"])
    report = verify_bundle(copy, reference, onnx_cpu_runner)
    assert [f.passed for f in report.files] == [True, False]
    assert not Bundle.open(broken).manifest["stages"]["verify"]["passed"]


def test_changed_checkpoint_is_refused(bundle: Bundle, tmp_path: Path, checkpoint: Path) -> None:
    copy = tmp_path / "changed.safetensors"
    copy.write_bytes(checkpoint.read_bytes())
    weights = {**bundle.manifest["model"]["weights"], "path": str(copy)}
    build_reference("skresnet18", weights)
    copy.write_bytes(checkpoint.read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(WeightsError, match="changed since export"):
        build_reference("skresnet18", weights)


def test_fused_preprocessing_bundle_verifies(tmp_path: Path, checkpoint: Path) -> None:
    bundle, report = export_bundle(ExportSettings(
        model="skresnet18", out=tmp_path / "fused", weights=checkpoint, exporter="legacy", input_size=SIZE,
        fuse_preprocess=True,
    ),
                      onnx_runner=onnx_cpu_runner)
    assert report is not None and report.passed
    assert bundle.manifest["input"]["dtype"] == "uint8" and bundle.manifest["input"]["layout"] == "NHWC"
    assert bundle.manifest["input"]["shape"] == ["batch", 64, 64, 3]
    assert bundle.manifest["files"]["model.raw.onnx"]["input"]["dtype"] == "float32"
    assert bundle.manifest["preprocess"]["in_graph"] is True


def test_refusals_leave_nothing_behind(tmp_path: Path, checkpoint: Path) -> None:
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(BundleError, match="not empty; pass --force"):
        export_bundle(ExportSettings(model="skresnet18", out=tmp_path / "full", exporter="legacy", input_size=SIZE),
                      onnx_runner=onnx_cpu_runner)
    with pytest.raises(WeightsError, match="does not fit"):
        export_bundle(ExportSettings(model="skresnet34", out=tmp_path / "new", weights=checkpoint, input_size=SIZE),
                      onnx_runner=onnx_cpu_runner)
    with pytest.raises(ValidationError, match="opset"):
        export_bundle(ExportSettings(model="skresnet18", out=tmp_path / "new", opset=12))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["full"]
    assert [p.name for p in (tmp_path / "full").iterdir()] == ["keep.txt"]


def test_failed_export_leaves_no_staging_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sk_deploy.graph.pipeline as pipeline

    def broken_optimize(*args, **kwargs):
        raise ExportError("optimiser crashed")

    monkeypatch.setattr(pipeline, "optimize", broken_optimize)
    with pytest.raises(ExportError, match="optimiser crashed"):
        export_bundle(ExportSettings(model="skresnet18", out=tmp_path / "b", exporter="legacy", input_size=SIZE),
                      onnx_runner=onnx_cpu_runner)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1:8:32", BatchProfile(1, 8, 32)), ("4", BatchProfile(4, 4, 4)), (" 2:2:64 ", BatchProfile(2, 2, 64))],
)
def test_batch_profile_parse(text: str, expected: BatchProfile) -> None:
    assert BatchProfile.parse(text) == expected


@pytest.mark.parametrize("text", ["0:1:2", "8:4:16", "1:2", "a:b:c", "-1"])
def test_batch_profile_refuses(text: str) -> None:
    with pytest.raises(ExportError, match="batch"):
        BatchProfile.parse(text)


def test_resolve_input_keeps_the_crop_ratio() -> None:
    spec = get_spec("sknet50")
    assert resolve_input(spec, None) == ((3, 224, 224), spec.preprocess)
    shape, preprocess = resolve_input(spec, (288, 288))
    assert shape == (3, 288, 288) and preprocess.crop == 288 and preprocess.resize == 329
    with pytest.raises(ExportError, match="only square"):
        resolve_input(spec, (224, 256))


def test_compare_figures() -> None:
    rng = np.random.default_rng(0)
    reference = rng.standard_normal((4, 10)).astype(np.float32)
    same = compare("f", reference, reference.copy(), Thresholds())
    assert same.passed and same.max_abs == 0 and same.min_cosine == pytest.approx(1.0)
    swapped = reference.copy()
    swapped[0, [reference[0].argmax(), reference[0].argmin()]] = swapped[0, [reference[0].argmin(),
                                                                                reference[0].argmax()]]
    parity = compare("f", reference, swapped, Thresholds())
    assert parity.top1_agreement == 0.75 and not parity.passed
    assert {r.split()[0] for r in parity.failures} == {"max", "cosine", "top-1"}
    with pytest.raises(VerifyError, match="output shape"):
        compare("f", reference, reference[:2], Thresholds())


def test_generated_images_are_deterministic_pictures() -> None:
    first, second = generated_images(), generated_images()
    assert first == second and len(set(first)) == len(first) == 8
    picture = np.asarray(open_image(first[0]))
    assert picture.shape == (256, 320, 3) and picture.std() > 20


def test_image_files(tmp_path: Path) -> None:
    with pytest.raises(VerifyError, match="no pictures found"):
        image_files(tmp_path)
    with pytest.raises(VerifyError, match="no such directory"):
        image_files(tmp_path / "absent")
    (tmp_path / "sub").mkdir()
    for name in ("b.JPEG", "a.png", "sub/c.webp", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in image_files(tmp_path)] == ["a.png", "b.JPEG", "c.webp"]
    assert len(image_files(tmp_path, limit=2)) == 2
