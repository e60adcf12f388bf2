"""Settings of ``models`` (the registered networks) and ``predict`` (classify pictures)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field

from sk_deploy.settings.base import Cli, Settings
from sk_deploy.settings.serve import BACKEND_HELP


class ModelsSettings(Settings):
    """``sk-deploy models``: the registered networks."""

    COMMAND = "models"
    gmacs: bool = Field(True, description="Count GMACs (builds each network once, a few seconds).")
    as_json: Annotated[bool, Cli(name="--json")] = Field(False, description="Print JSON instead of tables.")


class PredictSettings(Settings):
    """``sk-deploy predict``: the top-k labels of pictures."""

    COMMAND = "predict"
    images: Annotated[tuple[Path, ...], Cli(argument=True)] = Field(description="Image files (JPEG, PNG, WebP, ...).")
    model: Annotated[str | None, Cli(flags=("-m",))] = Field(None, description="Registered model name (default "
                                                             "sknet50); runs it in PyTorch.")
    bundle: Path | None = Field(None, description="Bundle directory: run its graph or engine instead.")
    backend: Annotated[str, Cli(choices="backend")] = Field("auto", description=f"With --bundle: {BACKEND_HELP}.")
    precision: str = Field("auto", description="With --bundle: auto (the fastest precision whose gate passed for "
                           "this bundle and runs here, said in one line), fp32, fp16, int8, bf16 (openvino, on a CPU "
                           "with native bfloat16) or tf32 (GPUs).")
    weights: Path | None = Field(None, description="Checkpoint: .safetensors, or .pth/.pt/.bin.")
    pretrained: bool = Field(False, description="Load the timm checkpoint from the Hugging Face hub.")
    top_k: Annotated[int, Cli(flags=("-k",))] = Field(5, ge=1, description="Classes to show per image.")
    device: str = Field("auto", description="PyTorch device: auto, cpu, cuda or cuda:N.")
    as_json: Annotated[bool, Cli(name="--json")] = Field(False, description="Print JSON instead of tables.")
