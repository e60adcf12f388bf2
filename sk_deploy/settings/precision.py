"""Settings of ``quantize`` (FP16/INT8/bf16 graphs) and ``build`` (TensorRT engines)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from sk_deploy.settings.base import Cli, Settings, StrList

#: the INT8 calibration methods
METHODS = ("minmax", "entropy", "percentile")
#: which GPUs an engine may run on: this GPU model, any of this compute capability, any Ampere or newer
HARDWARE_COMPAT = ("none", "ampere+", "same-cc")


class QuantizeSettings(Settings):
    """``sk-deploy quantize``: one precision's graph added to a bundle, gated on accuracy."""

    COMMAND = "quantize"
    bundle: Annotated[Path, Cli(argument=True)] = Field(description="Bundle directory (from `sk-deploy export`).")
    precision: str = Field(description="The graph to add: fp16 or int8 (required: fp32 is the bundle's own); or "
                           "bf16 (no file: the float32 graph in bf16 on OpenVINO, measured and gated; needs a CPU "
                           "with native bfloat16).")
    target: Literal["auto", "tensorrt", "cpu"] = Field(
        "auto", description="int8 form: auto (tensorrt with a CUDA GPU here, else cpu), tensorrt (QDQ, symmetric "
        "int8) or cpu (U8S8, what ONNX Runtime runs fast on a CPU).")
    images: Path | None = Field(None, description="Folder of photos to calibrate on and measure accuracy on "
                                "(JPEG/PNG); int8 needs it.")
    calib_size: int = Field(256, ge=1, description="Photos of --images to calibrate on (a fixed-seed subset).")
    holdout_size: int = Field(64, ge=1, description="Other photos of --images to measure accuracy on.")
    method: Literal[METHODS] = Field("minmax", description="Calibration: minmax, entropy or percentile.")  # type: ignore[valid-type]
    exclude: StrList = Field((), description="Op types or node names to keep float32, comma-separated.")
    gate: bool = Field(True, description="Refuse a graph that misses its accuracy gate.")
    high_precision: Literal["fp16", "fp32"] | None = Field(
        None, description="int8: type of the non-quantized part, fp16 or fp32 (default: fp16 for --target "
        "tensorrt, fp32 for cpu).")
    auto_exclude: bool = Field(False, description="int8: if the gate fails, keep the fewest most sensitive layers "
                               "float until it passes (reported, recorded).")
    measure_speed: bool = Field(True, description="Once the gate passes, time the precision against fp32 on this "
                                "machine as --precision auto would serve each, and record it: the speed-up auto says, "
                                "or why it passes the precision over.")
    as_json: Annotated[bool, Cli(name="--json")] = Field(False, description="Print JSON instead of tables.")


class BuildSettings(Settings):
    """``sk-deploy build``: a TensorRT engine from one of the bundle's graphs."""

    COMMAND = "build"
    bundle: Annotated[Path, Cli(argument=True)] = Field(description="Bundle directory (from `sk-deploy export`, "
                                                        "`sk-deploy quantize`).")
    precision: str = Field("fp32", description="fp32 (model.onnx), fp16 (model.fp16.onnx) or int8 (model.int8.onnx, "
                           "the TensorRT Q/DQ form).")
    batch_profile: str | None = Field(None, description="Optimisation profile MIN:OPT:MAX (default: the bundle's).")
    workspace: float = Field(4.0, gt=0, description="Builder workspace limit in GiB.")
    timing_cache: Path | None = Field(None, description="Timing cache to load and save (default: one per GPU and "
                                      "TensorRT version under ~/.cache/sk-deploy).")
    hardware_compat: Literal[HARDWARE_COMPAT] = Field(  # type: ignore[valid-type]
        "none", description="none (this GPU model), same-cc (any GPU of this compute capability) or ampere+ (any "
        "Ampere or newer GPU).")
