"""A recipe: one TOML file naming a model, a target and everything every stage needs, checked before any work.

The pydantic model below is the schema; each section is made of fields of a stage's settings model
(``sk_deploy.settings``), so a key is the option of that name, with its default and range
(``docs/reference/`` lists them): unknown keys, wrong types, a
precision the target cannot take and int8 without calibration photos are refused in one line that names the
key and the valid choices. Precisions are the bundle's graph forms (``bundle.GRAPH_FORMS``), named ``fp32``,
``fp16``, ``int8`` (the TensorRT Q/DQ form) and ``int8-cpu``; a precision added to that table is accepted here
with no change.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sk_deploy.bundle import GRAPH_FORMS, GraphForm, form_name
from sk_deploy.errors import SkDeployError
from sk_deploy.settings.base import section
from sk_deploy.settings.bench import BenchSettings
from sk_deploy.settings.graph import ExportSettings
from sk_deploy.settings.precision import BuildSettings, QuantizeSettings
from sk_deploy.settings.recipe import EvaluateSettings

TARGETS = ("cpu", "gpu")


class RecipeError(SkDeployError, ValueError):
    """A recipe that cannot be read or is not valid; the message names the key and the valid choices."""


def target_forms(target: str) -> dict[str, GraphForm]:
    """The graph forms a target can take, by recipe name: the GPU every form but the CPU-only ones, the CPU
    every form but the TensorRT-only ones."""
    excluded = "cpu" if target == "gpu" else "tensorrt"
    return {form_name(f, GRAPH_FORMS): f for f in GRAPH_FORMS if f.target != excluded}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class ModelSection(_Section):
    """Which network, and which weights: ``random``, ``pretrained`` (timm's, from the hub) or a checkpoint path."""

    name: str
    weights: str = "random"


# Each section is some fields of a stage's settings model, the very same fields (default, range, help): a recipe
# key is the option of that name.
#: how the graph is exported (``sk-deploy export``'s options)
ExportSection = section(ExportSettings, "input_size", "batch_profile", "opset", "exporter", "fuse_preprocess",
                        "recompute_bn", "recompute_bn_count", title="ExportSection")
#: the photos INT8 calibrates on and the held-out ones its gate is measured on (``sk-deploy quantize``'s options)
CalibrationSection = section(QuantizeSettings, "images", "calib_size", "holdout_size", "method",
                             title="CalibrationSection")
#: one graph to make: its accuracy gate, and op types or node names to keep float32 (``sk-deploy quantize``'s)
PrecisionSection = section(QuantizeSettings, "gate", "exclude", title="PrecisionSection")
#: TensorRT engine build settings, GPU target (``sk-deploy build``'s options)
BuildSection = section(BuildSettings, "workspace", "hardware_compat", "timing_cache", title="BuildSection")
#: the photos accuracy is measured on (default: calibration.images) and their labels (``sk-deploy evaluate``'s)
EvaluateSection = section(EvaluateSettings, "images", "labels", "limit", optional=("images",),
                          title="EvaluateSection")
#: the latency benchmark (``sk-deploy bench``'s options)
BenchSection = section(BenchSettings, "batch_sizes", "warmup_ms", "duration_ms", "threads", title="BenchSection")


class Recipe(_Section):
    """A whole recipe; ``precisions`` maps recipe precision names (see ``target_forms``) to their settings."""

    target: Literal[TARGETS]  # type: ignore[valid-type]
    out: str | None = None
    model: ModelSection
    export: ExportSection = Field(default_factory=ExportSection)  # type: ignore[valid-type]
    calibration: CalibrationSection = Field(default_factory=CalibrationSection)  # type: ignore[valid-type]
    precisions: dict[str, PrecisionSection]  # type: ignore[valid-type]
    build: BuildSection = Field(default_factory=BuildSection)  # type: ignore[valid-type]
    evaluate: EvaluateSection = Field(default_factory=EvaluateSection)  # type: ignore[valid-type]
    bench: BenchSection = Field(default_factory=BenchSection)  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        from sk_deploy.models.registry import list_models

        if self.model.name not in list_models():
            raise ValueError(f"model.name: unknown model {self.model.name!r}; choose one of: "
                             f"{', '.join(list_models())}")
        forms = target_forms(self.target)
        for name in self.precisions:
            if name not in forms:
                raise ValueError(f"precisions.{name}: the {self.target} target cannot take {name!r}; choose from: "
                                 f"{', '.join(forms)}")
        if "fp32" not in self.precisions:
            raise ValueError("precisions.fp32: every recipe makes the float32 graph (the others come from it)")
        int8 = [n for n in self.precisions if forms[n].precision == "int8"]
        if int8 and not self.calibration.images:
            raise ValueError(f"calibration.images: {int8[0]} needs calibration photos; set it to a folder of "
                             "JPEG/PNG photos (or --set calibration.images=DIR)")
        if self.export.recompute_bn and not self.calibration.images:
            raise ValueError("calibration.images: export.recompute_bn takes its photos from it; set it to a folder")
        return self

    def forms(self) -> dict[str, GraphForm]:
        """The graph forms this recipe makes, in the recipe's order."""
        table = target_forms(self.target)
        return {name: table[name] for name in self.precisions}


def _parse_value(text: str) -> Any:
    """A ``--set`` value: a TOML value when it reads as one (``64``, ``true``, ``[1, 8]``), else the string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def split_sets(text: str) -> list[str]:
    """``a.b=1,c=[1, 8]`` -> ``["a.b=1", "c=[1, 8]"]``: a comma starts a new pair only where ``key=`` follows."""
    return [part for part in re.split(r",(?=\s*[A-Za-z_][\w.-]*=)", text) if part.strip()]


def apply_sets(document: dict[str, Any], sets: list[str]) -> dict[str, Any]:
    """``document`` with each ``key.path=value`` of ``sets`` put in (tables made where missing)."""
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"--set {item!r}: expected key=value (for example calibration.count=128)")
        *tables, leaf = key.strip().split(".")
        node = document
        for part in tables:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise RecipeError(f"--set {key}: {part} is a value, not a table")
            node = child
        node[leaf] = _parse_value(value.strip())
    return document


def _one_line(exc: ValidationError) -> str:
    """The first problem pydantic found, as ``key: what is wrong``."""
    error = exc.errors()[0]
    where = ".".join(str(p) for p in error["loc"])
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        parent = error["loc"][:-1]
        model: Any = Recipe
        for part in parent:
            field = model.model_fields.get(str(part)) if hasattr(model, "model_fields") else None
            model = field.annotation if field is not None else None
        choices = ", ".join(model.model_fields) if model is not None and hasattr(model, "model_fields") else ""
        return f"{where}: unknown key" + (f"; valid keys here: {choices}" if choices else "")
    if error["type"] == "literal_error":
        return f"{where}: {message}"
    if error["type"] == "missing":
        return f"{where}: required key missing"
    return f"{where}: {message}" if where else message


def parse_recipe(document: dict[str, Any], source: str = "recipe") -> Recipe:
    """Validate a recipe document; a RecipeError with one line naming the key otherwise."""
    try:
        return Recipe.model_validate(document)
    except ValidationError as exc:
        raise RecipeError(f"{source}: {_one_line(exc)}") from None


def load_recipe(path: str | Path, sets: list[str] | None = None) -> Recipe:
    """Read and validate the recipe at ``path`` with ``--set`` overrides applied."""
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read the recipe ({exc.strerror or exc})") from None
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path}: not valid TOML ({exc})") from None
    return parse_recipe(apply_sets(document, list(sets or [])), str(path))
