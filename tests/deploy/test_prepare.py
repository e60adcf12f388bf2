"""`sk-deploy prepare`'s decisions on a real bundle: which engine fits which machine (described, since there is no
GPU here), when nothing is built, and the writable copy of a read-only bundle."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sk_deploy.bundle import Bundle, MissingGraph
from sk_deploy.deploy.container import PrepareError, PrepareRequest, prepare, work_copy
from sk_deploy.machine import Machine, probe_machine

ENGINE = "model.fp32.h100-80gb-hbm3.trt10.8.plan"
H100 = Machine(True, "NVIDIA H100 80GB HBM3", (9, 0), ("CUDAExecutionProvider",), "10.8.0.43")
CPU_ONLY = Machine(False, None, None, ("CPUExecutionProvider",), None)


@pytest.fixture()
def bundle_dir(small_bundle: Bundle, tmp_path: Path) -> Path:
    """A copy of the small bundle with a stand-in fp32 engine recorded as built on an H100 with TensorRT 10.8."""
    path = tmp_path / "bundle"
    shutil.copytree(small_bundle.path, path)
    bundle = Bundle.open(path)
    (path / ENGINE).write_bytes(b"stand-in engine")
    bundle.add_file(ENGINE, role="engine", precision="fp32", source={"file": "model.onnx"},
                    tensorrt={"version": "10.8.0.43"}, gpu={"name": H100.gpu_name, "compute_capability": [9, 0]},
                    hardware_compat="none", profile={"input": "input", "min": 1, "opt": 8, "max": 32})
    bundle.save()
    return path


def test_an_engine_for_this_gpu_and_tensorrt_is_used_as_is(bundle_dir: Path) -> None:
    prepared = prepare(PrepareRequest(bundle_dir, precision="fp32"), machine=H100)
    assert prepared.bundle == bundle_dir and prepared.engine == ENGINE and not prepared.built
    assert "fits NVIDIA H100 80GB HBM3 and TensorRT 10.8.0.43" in prepared.reason


def test_no_gpu_no_tensorrt_or_never_build_nothing(bundle_dir: Path) -> None:
    before = json.loads((bundle_dir / "manifest.json").read_text())
    cpu = prepare(PrepareRequest(bundle_dir), machine=CPU_ONLY)
    assert (cpu.bundle, cpu.engine, cpu.built) == (bundle_dir, None, False) and "no CUDA GPU" in cpu.reason
    no_trt = prepare(PrepareRequest(bundle_dir), machine=Machine(True, "NVIDIA L4", (8, 9), (), None))
    assert no_trt.engine is None and "NVIDIA L4 but no TensorRT" in no_trt.reason
    never = prepare(PrepareRequest(bundle_dir, build="never"), machine=H100)
    assert never.engine is None and not never.built and "engine builds are off" in never.reason
    assert json.loads((bundle_dir / "manifest.json").read_text()) == before


def test_bad_requests_and_bundles_are_refused(bundle_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(PrepareError, match="unknown engine build mode 'sometimes'"):
        prepare(PrepareRequest(bundle_dir, build="sometimes"), machine=CPU_ONLY)
    with pytest.raises(PrepareError, match="unknown precision 'int4'"):
        prepare(PrepareRequest(bundle_dir, precision="int4"), machine=CPU_ONLY)
    with pytest.raises(PrepareError, match="no bundle there; mount one"):
        prepare(PrepareRequest(tmp_path / "absent"), machine=CPU_ONLY)
    (bundle_dir / ENGINE).write_bytes(b"another engine")  # every recorded file is checked, engines too
    with pytest.raises(RuntimeError, match=f"{ENGINE}: sha256 differs from the manifest"):
        prepare(PrepareRequest(bundle_dir), machine=CPU_ONLY)


def test_work_copy_is_made_once_and_replaced_when_the_bundle_changes(bundle_dir: Path, tmp_path: Path) -> None:
    work = tmp_path / "work"
    with pytest.raises(PrepareError, match="set SK_WORK_DIR"):
        work_copy(Bundle.open(bundle_dir), None)
    copy = work_copy(Bundle.open(bundle_dir), work)
    assert copy == work / "bundle"
    assert sorted(p.name for p in copy.iterdir()) == sorted(p.name for p in bundle_dir.iterdir())
    assert (copy / "model.onnx").read_bytes() == (bundle_dir / "model.onnx").read_bytes()
    marker = copy / "engine-built-at-first-start.plan"
    marker.write_bytes(b"kept")
    assert work_copy(Bundle.open(bundle_dir), work) == copy and marker.exists()  # same model.onnx: reused
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    manifest["files"]["model.onnx"]["sha256"] = "0" * 64  # a new export mounted in its place
    (bundle_dir / "manifest.json").write_text(json.dumps(manifest))
    assert work_copy(Bundle.open(bundle_dir), work) == copy and not marker.exists()
    assert sorted(p.name for p in work.iterdir()) == ["bundle"]  # no staging or old copies left


def test_what_cannot_be_done_is_refused_not_reported_as_success(bundle_dir: Path) -> None:
    with pytest.raises(PrepareError, match=r"--build-engine always: cannot build .* \(no CUDA GPU\)"):
        prepare(PrepareRequest(bundle_dir, build="always"), machine=CPU_ONLY)
    no_trt = Machine(True, "NVIDIA L4", (8, 9), (), None)
    with pytest.raises(PrepareError, match="NVIDIA L4 but no TensorRT"):
        prepare(PrepareRequest(bundle_dir, build="always"), machine=no_trt)
    with pytest.raises(MissingGraph, match=r"the bundle has no fp16 graph model\.fp16\.onnx to serve"):
        prepare(PrepareRequest(bundle_dir, precision="fp16", build="never"), machine=CPU_ONLY)


@pytest.mark.skipif(probe_machine().cuda, reason="checks the CPU-only answer")
def test_the_command_exits_non_zero_when_it_cannot_build(bundle_dir: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "sk_deploy", "prepare", str(bundle_dir), "--build-engine", "always"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1].startswith("error: --build-engine always: cannot build")
