"""Whether an engine may be deserialized here, from its manifest entry: TensorRT version, GPU model and
compute capability, and the hardware-compatibility level it was built with; and the engine's file name."""

from __future__ import annotations

import pytest

from sk_deploy.engines.compat import EngineMismatch, check_engine, engine_file_name, find_engine, gpu_slug

H100 = ("NVIDIA H100 80GB HBM3", (9, 0))


def entry(name: str = H100[0], cc: tuple[int, int] = H100[1], version: str = "11.4.0", level: str = "none") -> dict:
    return {"role": "engine", "precision": "fp16", "tensorrt": {"version": version},
            "gpu": {"name": name, "compute_capability": list(cc)}, "hardware_compat": level}


def test_file_names() -> None:
    assert gpu_slug("NVIDIA H100 80GB HBM3") == "h100-80gb-hbm3"
    assert gpu_slug("NVIDIA GeForce RTX 4090") == "geforce-rtx-4090"
    assert gpu_slug("Tesla T4") == "tesla-t4"
    assert engine_file_name("int8", "NVIDIA A100-SXM4-80GB", "10.13.3.9") == "model.int8.a100-sxm4-80gb.trt10.13.plan"


def test_same_gpu_and_version_passes() -> None:
    check_engine(entry(), "11.4.0", *H100)


@pytest.mark.parametrize(
    ("recorded", "version", "gpu", "message"),
    [
        (entry(version="10.13.0"), "11.4.0", H100, "built with TensorRT 10.13.0, this machine has 11.4.0"),
        (entry(), "11.4.0", ("NVIDIA A100-SXM4-80GB", (8, 0)), r"built for NVIDIA H100 80GB HBM3 \(sm 9.0\)"),
        (entry(), "11.4.0", ("NVIDIA H200", (9, 0)), "not built with --hardware-compat same-cc"),
        (entry(level="ampere+"), "11.4.0", ("Tesla T4", (7, 5)), "hardware-compatible for Ampere and newer"),
        (entry(), None, (None, None), "needs TensorRT and an NVIDIA GPU"),
    ],
)
def test_mismatches_say_to_rebuild(recorded: dict, version: str | None, gpu: tuple, message: str) -> None:
    with pytest.raises(EngineMismatch, match=message) as raised:
        check_engine(recorded, version, *gpu, file="model.fp16.h100.trt11.4.plan")
    assert "\n" not in str(raised.value)
    if version is not None:
        assert "sk-deploy build BUNDLE --precision fp16" in str(raised.value)


def test_compatibility_levels_allow_other_gpus() -> None:
    check_engine(entry(level="same-cc"), "11.4.0", "NVIDIA H200", (9, 0))
    check_engine(entry(level="ampere+"), "11.4.0", "NVIDIA A100-SXM4-80GB", (8, 0))
    check_engine(entry(level="ampere+"), "11.4.0", "NVIDIA B200", (10, 0))


def test_find_engine_prefers_this_gpu() -> None:
    manifest = {"files": {"a.plan": entry(name="NVIDIA A100-SXM4-80GB", cc=(8, 0)), "b.plan": entry(),
                          "model.onnx": {"role": "model"}}}
    assert find_engine(manifest, "fp16", *H100[:1], "11.4.0") == "b.plan"
    assert find_engine(manifest, "fp16", "NVIDIA L4", "11.4.0") == "a.plan"  # check_engine will then refuse it
    assert find_engine(manifest, "int8", *H100[:1], "11.4.0") is None
