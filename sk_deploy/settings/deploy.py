"""Settings of ``triton-repo`` (a Triton model repository) and ``prepare`` (a container's start)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from sk_deploy.backends import backend_names
from sk_deploy.settings.base import Cli, PositiveInts, Settings
from sk_deploy.settings.serve import ServeSettings

#: the service's picture limits, the defaults of an ensemble's decoding step too
_SERVE = ServeSettings.model_fields

#: Triton backends a repository is written for
BACKENDS = ("onnxruntime", "tensorrt", "openvino", "python")
#: Triton instance kinds (KIND_GPU, KIND_CPU)
KINDS = ("gpu", "cpu")
#: when ``prepare`` builds a TensorRT engine
BUILD_MODES = ("auto", "always", "never")


class TritonSettings(Settings):
    """``sk-deploy triton-repo``: a Triton model repository from a bundle."""

    COMMAND = "triton-repo"
    bundle: Annotated[Path, Cli(argument=True)] = Field(description="Bundle directory (from `sk-deploy export`).")
    out: Annotated[Path, Cli(flags=("-o",))] = Field(description="Model repository directory; the model goes into "
                                                     "OUT/<model>/ (other models there are left alone).")
    backend: Literal[BACKENDS] = Field(  # type: ignore[valid-type]
        "onnxruntime", description="onnxruntime (platform onnxruntime_onnx, the bundle's ONNX graph), tensorrt "
        "(tensorrt_plan, an engine from `sk-deploy build`), openvino (Triton's OpenVINO backend on the CPU, the "
        "bundle's ONNX graph) or python (Triton's Python backend running the whole bundle through sk-deploy's "
        "Predictor; the server's Python needs sk-deploy).")
    precision: str = Field("fp32", description="fp32, fp16 or int8: which graph or engine of the bundle; bf16 with "
                           "--backend openvino or python.")
    runtime: Annotated[str, Cli(choices="backend")] = Field(
        "auto", description="With --backend python: the backend sk-deploy's Predictor runs (auto: the fastest the "
        f"serving machine runs, as `sk-deploy serve` picks; or one of: {', '.join(backend_names())}).")
    ensemble: bool = Field(False, description="Also write <model>_preprocess (encoded pictures, BYTES, decoded and "
                           "preprocessed as the bundle says, on Triton's Python backend) and <model>_ensemble "
                           "(pictures in, the model's logits and labels out).")
    max_pixels: int = Field(_SERVE["max_pixels"].default, ge=1, description="With --ensemble: largest picture, in "
                            "pixels, decoded (checked from its header, before decoding).")
    max_aspect_ratio: float = Field(_SERVE["max_aspect_ratio"].default, ge=1, description="With --ensemble: longest "
                                    "over shortest side of a picture decoded (checked from its header).")
    max_picture_mb: float = Field(_SERVE["max_body_mb"].default, ge=0.001, description="With --ensemble: largest "
                                  "encoded picture.")
    instance_kind: Literal[KINDS] | None = Field(  # type: ignore[valid-type]
        None, description="Triton instance kind: gpu (KIND_GPU) or cpu (KIND_CPU); int8 on cpu takes "
        "model.int8-cpu.onnx first (default: cpu for openvino, else gpu, said when taken).")
    max_batch: int | None = Field(None, ge=1, description="max_batch_size (default and upper bound: the bundle's batch "
                                  "profile maximum, or the engine's).")
    preferred_batch_sizes: PositiveInts = Field((), description="Preferred batch sizes for the dynamic batcher, "
                                                "comma-separated (default none).")
    max_queue_delay_ms: float = Field(2.0, ge=0, description="How long the dynamic batcher may hold a request to fill "
                                      "a batch, in milliseconds.")
    instances: int = Field(1, ge=1, description="Model instances (instance_group count) per GPU, or on the CPU.")
    name: str | None = Field(None, description="Model name in Triton (default: the bundle's model name).")
    engine: str | None = Field(None, description="With --backend tensorrt: the engine file of the bundle to export "
                               "(default: the first of that precision).")
    ort_tensorrt: bool = Field(False, description="With --backend onnxruntime on a GPU: run the graph through ONNX "
                               "Runtime's TensorRT provider (precision_mode from --precision).")
    force: bool = Field(False, description="Replace an existing OUT/<model>/ directory.")
    config: Path | None = Field(None, description="TOML file of serving settings (table serving: max_batch -> "
                                "max_batch_size, max_delay_ms -> max_queue_delay_microseconds, instances -> "
                                "instance_group count; from `sk-deploy tune`); options given here win over it.")


class PrepareSettings(Settings):
    """``sk-deploy prepare``: a bundle made ready to serve in a container."""

    COMMAND = "prepare"
    bundle: Annotated[Path, Cli(argument=True)] = Field(description="Bundle directory (in a container: the mounted "
                                                        "volume).")
    precision: str = Field("fp32", description="Precision to serve: fp32, fp16 or int8 (the engine to find or "
                           "build).")
    build_engine: Literal[BUILD_MODES] = Field(  # type: ignore[valid-type]
        "auto", description="auto (build a TensorRT engine when there is a GPU and TensorRT and no engine for them), "
        "always, or never.")
    work_dir: Path | None = Field(None, description="Writable directory for a copy of a read-only bundle, where the "
                                  "engine is built (a persistent volume keeps it).")
