"""What every settings model shares: the base class, the ``Cli`` marker for what a field's name alone cannot say on
the command line, comma-separated list types, sections (a model of some of another's fields, for recipes and
``--config`` files) and the reproducing command line."""

from __future__ import annotations

import shlex
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import annotated_types
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo

#: the ONNX opset a graph is exported with by default, and the range the exporter supports (below 13 Softmax
#: flattens its input to 2-D; 17 is the oldest this project tests)
OPSET, MIN_OPSET, MAX_OPSET = 18, 17, 23
#: the batch sizes a bundle is made for, MIN:OPT:MAX: an engine's optimisation profile and Triton's max batch
BATCH_PROFILE = "1:8:32"


@dataclass(frozen=True)
class Cli:
    """How a field appears on the command line beyond its name: a positional ``argument``, the option's
    ``name`` when the field's cannot be it (``--json``), extra ``flags`` (``-o``), a ``metavar``, ``repeat``
    (a list option given once per value), and ``choices``: the name of a table whose names are the valid values
    (``"backends"``), looked up by the command line when the command runs and by the reference; never for
    ``--help``, as the table imports the backends' modules."""

    argument: bool = False
    name: str | None = None
    flags: tuple[str, ...] = ()
    metavar: str | None = None
    repeat: bool = False
    choices: str | None = None


def _split(cast: type) -> Callable[[Any], Any]:
    def split(value: Any) -> Any:
        if isinstance(value, str):
            items = [item.strip() for item in value.split(",") if item.strip()]
            try:
                return tuple(cast(item) for item in items)
            except ValueError:
                raise ValueError(f"expected comma-separated {cast.__name__} values, got {value!r}") from None
        return value

    return split


#: a list given as one comma-separated value on the command line (``1,8,32``), or as a list in a file
IntList = Annotated[tuple[int, ...], BeforeValidator(_split(int))]
PositiveInts = Annotated[tuple[Annotated[int, Field(ge=1)], ...], BeforeValidator(_split(int))]
FloatList = Annotated[tuple[float, ...], BeforeValidator(_split(float))]
StrList = Annotated[tuple[str, ...], BeforeValidator(_split(str))]


class Settings(BaseModel):
    """A stage's settings: one field per option. ``COMMAND`` is the command that takes them."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    COMMAND: ClassVar[str] = ""
    SOURCE: ClassVar[type[BaseModel] | None] = None
    """A section's stage model (``section``); None for a stage's own model."""


def defaults(model: type[BaseModel]) -> dict[str, Any]:
    """Each optional field's default: what a stage's request takes its defaults from."""
    return {name: field.default for name, field in model.model_fields.items() if not field.is_required()}


def cli_of(field: FieldInfo) -> Cli:
    """The field's ``Cli`` marker (a default one when it has none)."""
    return next((m for m in field.metadata if isinstance(m, Cli)), Cli())


def option_name(name: str, field: FieldInfo) -> str:
    """The command-line option of field ``name``: ``max_delay_ms`` -> ``--max-delay-ms``."""
    return cli_of(field).name or "--" + name.replace("_", "-")


def bounds(field: FieldInfo) -> dict[str, float]:
    """The field's numeric range: any of ``ge``, ``gt``, ``le``, ``lt``."""
    found: dict[str, float] = {}
    for item in field.metadata:
        for key in ("ge", "gt", "le", "lt"):
            if isinstance(item, getattr(annotated_types, key.capitalize())):
                found[key] = getattr(item, key)
    return found


def base_type(annotation: Any) -> Any:
    """``X | None`` -> ``X``; ``Annotated[X, ...]`` -> ``X``."""
    while typing.get_origin(annotation) is Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        rest = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(rest) == 1:
            return base_type(rest[0])
    return annotation


def choices(field: FieldInfo) -> tuple[str, ...] | None:
    """The values a field takes when they are a ``Literal``; else None."""
    annotation = base_type(field.annotation)
    if typing.get_origin(annotation) is typing.Literal:
        return tuple(typing.get_args(annotation))
    return None


def is_list(field: FieldInfo) -> bool:
    """A list option: a variable-length tuple or a list."""
    annotation = base_type(field.annotation)
    origin = typing.get_origin(annotation)
    return origin is list or (origin is tuple and typing.get_args(annotation)[-1:] == (Ellipsis,))


def shown(value: Any) -> str:
    """A value as the command line writes it: ``1,8,32``, ``2``, ``0.5``, a path."""
    if isinstance(value, (tuple, list)):
        return ",".join(shown(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def section(model: type[BaseModel], *names: str, title: str | None = None, optional: Iterable[str] = (),
            defaults: dict[str, Any] | None = None) -> type[BaseModel]:
    """A model of the fields ``names`` of ``model``, each the very same field (default, range, help): a recipe
    section or a settings file's table. ``optional``: fields required in ``model`` that may be left out here
    (None). ``defaults``: none; a section never changes a field's default."""
    assert not defaults, "a section takes its defaults from the stage's model"
    fields: dict[str, Any] = {}
    for name in names:
        field = model.model_fields[name]
        if name in optional:
            field = FieldInfo.merge_field_infos(field, default=None)
            fields[name] = (field.annotation | None, field)
        else:
            fields[name] = (field.annotation, field)
    made = create_model(title or f"{model.__name__}Section", __base__=Settings, **fields)  # type: ignore[call-overload]
    made.__doc__ = f"The {', '.join(names)} of ``{model.__name__}``."
    made.SOURCE = model  # type: ignore[attr-defined]
    return made


def command_words(settings: Settings, always: Iterable[str] = ()) -> list[str]:
    """The command that reproduces ``settings``, word by word: ``sk-deploy``, ``COMMAND``, the arguments, and each
    option that was given or differs from its default (``always``: options written even at their defaults)."""
    words = ["sk-deploy", type(settings).COMMAND]
    options: list[str] = []
    always = set(always)
    for name, field in type(settings).model_fields.items():
        value = getattr(settings, name)
        cli = cli_of(field)
        if cli.argument:
            words += [shown(v) for v in value] if isinstance(value, (list, tuple)) else [shown(value)]
            continue
        if value is None or (value == field.default and name not in always and name not in settings.model_fields_set):
            continue
        option = option_name(name, field)
        if isinstance(value, bool):
            options.append(option if value else "--no-" + option.removeprefix("--"))
        elif cli.repeat:
            options += [word for v in value for word in (option, shown(v))]
        elif not (isinstance(value, tuple) and not value):
            options += [option, shown(value)]
    return words + options


def command_line(settings: Settings, always: Iterable[str] = ()) -> str:
    """``command_words`` as one line, quoted where a shell needs it."""
    return shlex.join(command_words(settings, always))
