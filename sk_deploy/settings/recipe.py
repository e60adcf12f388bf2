"""Settings of ``run`` (a recipe) and ``evaluate`` (accuracy against labels)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from sk_deploy.backends import backend_names
from sk_deploy.settings.base import Cli, Settings, StrList

#: ``--labels auto``: the photo folder's own labels.csv, when it has one
AUTO_LABELS = "auto"


class RunSettings(Settings):
    """``sk-deploy run``: every stage of a recipe."""

    COMMAND = "run"
    recipe: Annotated[Path, Cli(argument=True, metavar="RECIPE")] = Field(description="A recipe (export/*.toml).")
    set: Annotated[tuple[str, ...], Cli(repeat=True)] = Field(
        (), description="Recipe keys to override, comma-separated key.path=value pairs "
        "(calibration.calib_size=128,bench.warmup_ms=0); may be repeated.")
    out: Path | None = Field(None, description="Bundle directory (default: the recipe's `out`, else bundles/<recipe "
                             "name>).")


class EvaluateSettings(Settings):
    """``sk-deploy evaluate``: top-1/top-5 of every graph of a bundle against labels."""

    COMMAND = "evaluate"
    bundle: Annotated[Path, Cli(argument=True, metavar="BUNDLE")] = Field(description="Bundle directory.")
    images: Path = Field(description="Folder of photos: one folder per class, or any layout with --labels.")
    labels: Path | Literal["auto"] | None = Field(None, description="CSV of FILE,CLASS_INDEX (ImageNet validation "
                                                  "style), or auto: the labels.csv of --images when it has one.")
    limit: int = Field(1000, ge=1, description="Labelled photos to use.")
    backends: Annotated[StrList, Cli(choices="backends")] = Field((), description="Backends to run, comma-separated "
                                                                  f"({', '.join(backend_names(evaluate=True))}); "
                                                                  "default: all of them, each at every precision it "
                                                                  "serves (bf16 included); what cannot run here is "
                                                                  "listed with the reason.")
    as_json: Annotated[bool, Cli(name="--json")] = Field(False, description="Print the figures as JSON.")
