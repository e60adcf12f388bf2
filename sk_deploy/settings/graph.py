"""Settings of the graph commands: ``export``, ``verify``, ``inspect``, ``optimize`` and ``import``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from sk_deploy.settings.base import BATCH_PROFILE, MAX_OPSET, MIN_OPSET, OPSET, Cli, Settings

#: the torch exporters: dynamo (torch.export) and legacy (TorchScript)
EXPORTERS = ("dynamo", "legacy")
#: the pictures' preprocessing presets of an imported graph
PREPROCESS = ("imagenet", "inception")


def _square(value: Any) -> Any:
    """One number is a square size (``64`` -> ``(64, 64)``), as a recipe writes it."""
    return (value, value) if isinstance(value, int) and not isinstance(value, bool) else value


JSON = Annotated[bool, Cli(name="--json")]
Side = Annotated[int, Field(ge=32, le=2048)]


class ExportSettings(Settings):
    """``sk-deploy export``: a PyTorch model to a bundle."""

    COMMAND = "export"
    model: Annotated[str, Cli(argument=True)] = Field(description="Registered model name (see `sk-deploy models`).")
    out: Annotated[Path, Cli(flags=("-o",))] = Field(description="Bundle directory to write.")
    weights: Path | None = Field(None, description="Checkpoint: .safetensors, or .pth/.pt/.bin.")
    pretrained: bool = Field(False, description="Load the timm checkpoint from the Hugging Face hub.")
    opset: int = Field(OPSET, ge=MIN_OPSET, le=MAX_OPSET, description="ONNX opset.")
    batch_profile: str = Field(BATCH_PROFILE, description="Batch sizes to serve, MIN:OPT:MAX (recorded for engines).")
    input_size: Annotated[tuple[Side, Side] | None, BeforeValidator(_square)] = Field(
        None, description="Input height and width (a recipe may give one number: square), default the model's.")
    fuse_preprocess: bool = Field(False, description="model.onnx takes uint8 NHWC pictures and normalises them "
                                  "itself.")
    exporter: Literal[EXPORTERS] = Field("dynamo", description="torch exporter: dynamo (torch.export) or legacy "  # type: ignore[valid-type]
                                         "(TorchScript).")
    force: bool = Field(False, description="Replace a non-empty output directory.")
    verify: bool = Field(True, description="Check the ONNX files against PyTorch after export.")
    images: Path | None = Field(None, description="Folder of photos to verify on (default: generated pictures) "
                                "and, with --recompute-bn, to take BatchNorm statistics from.")
    recompute_bn: bool = Field(False, description="Recompute BatchNorm statistics on --images before export; with "
                               "random weights also scale residual branches: realistic activations for FP16/INT8 "
                               "figures.")
    recompute_bn_count: int = Field(64, ge=1, description="Photos of --images used by --recompute-bn.")
    as_json: JSON = Field(False, description="Print JSON instead of tables.")


class VerifySettings(Settings):
    """``sk-deploy verify``: every ONNX file of a bundle against PyTorch."""

    COMMAND = "verify"
    bundle: Annotated[Path, Cli(argument=True, metavar="BUNDLE")] = Field(description="Bundle directory.")
    images: Path | None = Field(None, description="Folder of pictures (default: generated ones).")
    limit: int = Field(16, ge=1, description="Pictures to use from --images.")
    weights: Path | None = Field(None, description="Reference checkpoint, instead of the manifest's.")
    max_abs: float = Field(1e-4, ge=0, description="Largest allowed absolute error of a logit.")
    min_cosine: float = Field(0.9999, ge=-1, le=1, description="Smallest allowed cosine similarity of a logit "
                              "vector.")
    min_top1: float = Field(1.0, ge=0, le=1, description="Smallest allowed top-1 agreement (0 to 1).")
    as_json: JSON = Field(False, description="Print JSON instead of tables.")


class InspectSettings(Settings):
    """``sk-deploy inspect``: a bundle's or an ONNX file's graphs."""

    COMMAND = "inspect"
    target: Annotated[Path, Cli(argument=True, metavar="BUNDLE|FILE.onnx")] = Field(
        description="A bundle directory or an ONNX file.")
    as_json: JSON = Field(False, description="Print the summary as JSON.")


class OptimizeSettings(Settings):
    """``sk-deploy optimize``: the cleanup and the SK rewrite on any ONNX file."""

    COMMAND = "optimize"
    source: Annotated[Path, Cli(argument=True, metavar="IN.onnx")] = Field(description="An ONNX file (any "
                                                                           "exporter).")
    out: Annotated[Path, Cli(flags=("-o",))] = Field(description="The optimised ONNX file to write.")
    input_size: int = Field(224, ge=1, description="Height and width for dynamic spatial axes in the check.")


class ImportSettings(Settings):
    """``sk-deploy import``: a bundle from an ONNX file."""

    COMMAND = "import"
    source: Annotated[Path, Cli(argument=True, metavar="IN.onnx")] = Field(description="An ONNX classifier (any "
                                                                           "exporter).")
    out: Annotated[Path, Cli(flags=("-o",))] = Field(description="Bundle directory to write.")
    preprocess: Literal[PREPROCESS] = Field("imagenet", description="The pictures' preprocessing at the graph's "  # type: ignore[valid-type]
                                            "input size: imagenet (mean/std of ImageNet) or inception (0.5/0.5).")
    fuse_preprocess: bool = Field(False, description="model.onnx takes uint8 NHWC pictures and normalises them "
                                  "itself.")
    force: bool = Field(False, description="Replace a non-empty output directory.")
