"""The bundle: manifest round trip, file hashes, refusal of unusable output directories, and staging that
leaves nothing behind when an export fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sk_deploy.bundle import (
    MANIFEST,
    Bundle,
    BundleError,
    atomic_write_bytes,
    check_target,
    sha256_file,
    staging,
    tool_versions,
)


def test_manifest_round_trip_with_file_hashes(tmp_path: Path) -> None:
    bundle = Bundle.new(tmp_path, {"name": "sknet50", "weights": {"source": "random", "seed": 0}})
    (tmp_path / "model.onnx").write_bytes(b"not really onnx")
    entry = bundle.add_file("model.onnx", role="model")
    bundle.record("export", {"nodes": 3})
    bundle.save()
    assert entry["bytes"] == 15 and entry["sha256"] == sha256_file(tmp_path / "model.onnx")

    reopened = Bundle.open(tmp_path)
    assert reopened.model_name == "sknet50"
    assert reopened.onnx_files() == ["model.onnx"]
    assert reopened.manifest["stages"]["export"] == {"nodes": 3}
    assert {"torch", "onnx", "onnxruntime", "sk-deploy", "python"} <= set(reopened.manifest["tools"])
    assert reopened.check_file("model.onnx") == tmp_path / "model.onnx"


def test_changed_or_missing_file_is_reported(tmp_path: Path) -> None:
    bundle = Bundle.new(tmp_path, {"name": "m"})
    (tmp_path / "model.onnx").write_bytes(b"a")
    bundle.add_file("model.onnx")
    (tmp_path / "model.onnx").write_bytes(b"b")
    with pytest.raises(BundleError, match="sha256 differs"):
        bundle.check_file("model.onnx")
    (tmp_path / "model.onnx").unlink()
    with pytest.raises(BundleError, match="missing"):
        bundle.file("model.onnx")
    with pytest.raises(BundleError, match=r"no file 'other\.onnx'"):
        bundle.file("other.onnx")


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no manifest.json"), ("{not json", "cannot read manifest"), ('{"format": "x"}', "not an sk-deploy")],
)
def test_open_refuses_what_is_not_a_bundle(tmp_path: Path, content: str | None, message: str) -> None:
    if content is not None:
        (tmp_path / MANIFEST).write_text(content)
    with pytest.raises(BundleError, match=message):
        Bundle.open(tmp_path)
    with pytest.raises(BundleError, match="no such directory"):
        Bundle.open(tmp_path / "absent")
    (tmp_path / "file").write_text("x")
    with pytest.raises(BundleError, match="is a file, not a bundle directory"):
        Bundle.open(tmp_path / "file")


def test_newer_format_is_refused(tmp_path: Path) -> None:
    (tmp_path / MANIFEST).write_text(json.dumps({"format": "sk-deploy-bundle", "format_version": 99}))
    with pytest.raises(BundleError, match="upgrade sk-deploy"):
        Bundle.open(tmp_path)


def test_check_target(tmp_path: Path) -> None:
    assert check_target(tmp_path / "new") == (tmp_path / "new").resolve()
    (tmp_path / "empty").mkdir()
    check_target(tmp_path / "empty")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(BundleError, match="not empty; pass --force"):
        check_target(tmp_path / "full")
    check_target(tmp_path / "full", force=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(BundleError, match="not a directory"):
        check_target(tmp_path / "file")
    with pytest.raises(BundleError, match="cannot write there"):
        check_target(tmp_path / "file" / "bundle")


def test_staging_renames_on_success_and_replaces_with_force(tmp_path: Path) -> None:
    target = tmp_path / "bundle"
    with staging(target) as stage:
        (stage / "a").write_text("1")
        assert not target.exists()
    assert (target / "a").read_text() == "1"
    with staging(target, force=True) as stage:
        (stage / "b").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bundle"]  # no staging or old copies left


def test_staging_leaves_nothing_behind_on_error(tmp_path: Path) -> None:
    target = tmp_path / "bundle"
    with pytest.raises(RuntimeError), staging(target) as stage:
        (stage / "half").write_text("half-written")
        raise RuntimeError("export failed")
    assert list(tmp_path.iterdir()) == []

    target.mkdir()
    (target / "old").write_text("keep")
    with pytest.raises(RuntimeError), staging(target, force=True):
        raise RuntimeError("export failed")
    assert [p.name for p in tmp_path.iterdir()] == ["bundle"] and (target / "old").read_text() == "keep"


def test_atomic_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    atomic_write_bytes(tmp_path / "f", b"data")
    assert [p.name for p in tmp_path.iterdir()] == ["f"] and (tmp_path / "f").read_bytes() == b"data"


def test_tool_versions_name_the_toolchain() -> None:
    versions = tool_versions()
    assert versions["torch"] and versions["onnx"] and versions["onnxruntime"]
