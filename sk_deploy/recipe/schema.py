"""A recipe: one TOML file naming a model, a target and everything every stage needs, checked before any work.

The pydantic model below is the schema (``export/README.md`` documents each key): unknown keys, wrong types, a
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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from sk_deploy.bundle import GRAPH_FORMS, GraphForm, form_name
from sk_deploy.errors import SkDeployError
from sk_deploy.graph.export import EXPORTERS
from sk_deploy.precision.int8 import METHODS

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


class ExportSection(_Section):
    """How the graph is exported (``sk-deploy export``'s options)."""

    input_size: int | None = Field(None, ge=32, le=2048)
    batch_profile: str = "1:8:32"
    opset: int = Field(18, ge=17)
    exporter: Literal[EXPORTERS] = "dynamo"  # type: ignore[valid-type]
    fuse_preprocess: bool = False
    recompute_bn: bool = False
    recompute_bn_count: int = Field(64, ge=1)


class CalibrationSection(_Section):
    """The photos INT8 calibrates on (and the held-out ones its gate is measured on)."""

    images: str | None = None
    count: int = Field(256, ge=1)
    holdout: int = Field(64, ge=1)
    method: Literal[METHODS] = "minmax"  # type: ignore[valid-type]


class PrecisionSection(_Section):
    """One graph to make: its accuracy gate, and op types or node names to keep float32."""

    gate: bool = True
    exclude: list[str] = Field(default_factory=list)


class BuildSection(_Section):
    """TensorRT engine build settings (GPU target)."""

    workspace_gib: float = Field(4.0, gt=0)
    hardware_compat: Literal["none", "same-cc", "ampere+"] = "none"
    timing_cache: str | None = None


class EvaluateSection(_Section):
    """The photos accuracy is measured on and their labels (a CSV FILE,CLASS_INDEX, or none: one folder per
    class, or agreement with float32 only)."""

    images: str | None = None
    labels: str | None = None
    limit: int = Field(64, ge=1)


class BenchSection(_Section):
    """The latency benchmark: batch sizes, warm-up and timed milliseconds per row."""

    batch_sizes: list[int] = Field(default_factory=lambda: [1, 8])
    warmup_ms: int = Field(500, ge=0)
    duration_ms: int = Field(2000, ge=0)
    threads: int = Field(0, ge=0)

    @field_validator("batch_sizes")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if not value or min(value) < 1:
            raise ValueError("give one or more batch sizes of 1 or more")
        return value


class Recipe(_Section):
    """A whole recipe; ``precisions`` maps recipe precision names (see ``target_forms``) to their settings."""

    target: Literal[TARGETS]  # type: ignore[valid-type]
    out: str | None = None
    model: ModelSection
    export: ExportSection = Field(default_factory=ExportSection)
    calibration: CalibrationSection = Field(default_factory=CalibrationSection)
    precisions: dict[str, PrecisionSection]
    build: BuildSection = Field(default_factory=BuildSection)
    evaluate: EvaluateSection = Field(default_factory=EvaluateSection)
    bench: BenchSection = Field(default_factory=BenchSection)

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
