"""What every command shares: the typer app, the two consoles, the one-line failure, list options."""

from __future__ import annotations

from typing import Any

import typer
from rich.console import Console

from sk_deploy.errors import SkDeployError

app = typer.Typer(
    name="sk-deploy",
    help="Deploy attention CNNs (SKNet, SENet): PyTorch -> clean ONNX -> TensorRT / ONNX Runtime -> HTTP.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

#: what a command catches around its work: every error meant for a person (one line, exit 1)
UserError = SkDeployError


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one error line for a person and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def note(message: str, style: str = "yellow", label: str = "note") -> None:
    """One line on stderr for a person: ``note: ...`` (or ``warning: ...``)."""
    err_console.print(f"[{style}]{label}:[/] {message}", highlight=False, soft_wrap=True)


def split(text: str, what: str, cast: Any = str) -> tuple:
    """A comma-separated option as a tuple of ``cast`` values; one error line for a bad item."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    try:
        return tuple(cast(item) for item in items)
    except ValueError:
        raise fail(f"{what}: expected comma-separated {cast.__name__} values, got {text!r}") from None
