"""A command's options made from its settings model: ``@command(Settings)`` registers a function that takes the
parsed model (parse -> stage -> render).

Each field becomes a typer parameter: its name the option (``--max-delay-ms``), its default, range (``ge``/``le``)
and ``Literal`` choices what click checks and ``--help`` shows, its description the help. A list is one
comma-separated value (``--batch-sizes 1,8,32``). The values given on the command line, and only those, are
validated by the model, so ``settings.model_fields_set`` says which options were given (a ``--config`` file fills
the others); a value the model refuses is a one-line usage error, exit 2.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from typer._click.core import ParameterSource
from typer._click.exceptions import UsageError

from sk_deploy.backends import backend_names
from sk_deploy.cli.common import app
from sk_deploy.settings.base import Settings, base_type, bounds, cli_of, is_list, option_name, shown

S = TypeVar("S", bound=Settings)

#: every command made here, in the order registered (the flow's): its settings model and its help
COMMANDS: dict[str, tuple[type[Settings], str]] = {}


#: the tables a field's ``Cli(choices=...)`` names: its valid values
CHOICES: dict[str, Callable[[], tuple[str, ...]]] = {
    "backend": lambda: ("auto", *backend_names()),
    "backends": lambda: backend_names(evaluate=True),
}


def valid_values(field: FieldInfo) -> tuple[str, ...] | None:
    """What a field named with ``Cli(choices=...)`` takes."""
    key = cli_of(field).choices
    return None if key is None else CHOICES[key]()


def _element(annotation: Any) -> Any:
    return typing.get_args(base_type(annotation))[0]


def _typer_type(field: FieldInfo) -> Any:
    """The type typer parses: a list is one comma-separated string (an argument or a repeated option: a list);
    a union of several types (a path or ``auto``) a string; else the field's own type."""
    cli = cli_of(field)
    annotation = base_type(field.annotation)
    if is_list(field):
        if cli.argument:
            return list[_element(annotation)]  # type: ignore[misc]
        return list[str] if cli.repeat else str
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return str
    if typing.get_origin(annotation) is tuple:  # a fixed tuple (height, width): its items without constraints
        return tuple[tuple(base_type(item) for item in typing.get_args(annotation))]  # type: ignore[misc]
    return annotation


def parameter(name: str, field: FieldInfo) -> inspect.Parameter:
    """The typer parameter of field ``name``."""
    cli = cli_of(field)
    kind = _typer_type(field)
    required = field.is_required()
    default: Any = inspect.Parameter.empty if required else field.default
    if is_list(field) and not cli.argument:
        default = None if cli.repeat or not default else shown(default)
    options: dict[str, Any] = {"help": field.description}
    if kind in (int, float):
        limits = bounds(field)
        options.update({key: limits[edge] for key, edge in (("min", "ge"), ("max", "le")) if edge in limits})
    if cli.metavar:
        options["metavar"] = cli.metavar
    if not required and default is None:
        kind = kind | None
    if cli.argument:
        info = typer.Argument(**options)
    else:
        names = (option_name(name, field), *cli.flags) if cli.name or cli.flags else ()
        info = typer.Option(*names, **options)
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[kind, info], default=default)


def where(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    """The option (or argument) a validation error's location names."""
    if not loc or str(loc[0]) not in model.model_fields:
        return "settings"
    field = model.model_fields[str(loc[0])]
    cli = cli_of(field)
    return (cli.metavar or str(loc[0]).upper()) if cli.argument else option_name(str(loc[0]), field)


def parse(model: type[S], values: dict[str, Any]) -> S:
    """``values`` (the options given) as the model; a usage error naming the option otherwise."""
    try:
        settings = model.model_validate(values)
    except ValidationError as exc:
        error = exc.errors()[0]
        message = str(error["msg"]).removeprefix("Value error, ")
        raise UsageError(f"{where(model, error['loc'])}: {message}") from None
    for name in settings.model_fields_set:
        field = model.model_fields[name]
        allowed = valid_values(field)
        value = getattr(settings, name)
        for item in (value if isinstance(value, tuple) else (value,)) if allowed is not None else ():
            if item not in allowed:
                raise UsageError(f"{option_name(name, field)}: {item!r} is not one of {', '.join(allowed)}")
    return settings


def command(model: type[S], **settings: Any) -> Callable[[Callable[[S], None]], Callable[[S], None]]:
    """Register the decorated ``function(settings)`` as ``model.COMMAND``, its parameters made from ``model``; its
    docstring is the command's help."""

    def register(function: Callable[[S], None]) -> Callable[[S], None]:
        params = [parameter(name, field) for name, field in model.model_fields.items()]

        def run(ctx: typer.Context, **values: Any) -> None:
            given = {name: value for name, value in values.items()
                     if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)}
            try:
                parsed = parse(model, given)
            except UsageError as exc:
                exc.ctx = ctx
                raise
            function(parsed)

        context = inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=typer.Context)
        run.__signature__ = inspect.Signature([context, *params])  # type: ignore[attr-defined]
        run.__annotations__ = {"ctx": typer.Context, **{p.name: p.annotation for p in params}, "return": None}
        run.__name__, run.__doc__ = function.__name__, function.__doc__
        app.command(model.COMMAND, **settings)(run)
        COMMANDS[model.COMMAND] = (model, inspect.cleandoc(function.__doc__ or ""))
        return function

    return register
