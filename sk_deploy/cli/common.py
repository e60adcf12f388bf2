"""What every command shares: the typer app, the two consoles, the one-line failure, a ``--config`` file."""

from __future__ import annotations

import signal
import sys
import threading
from typing import Any, TypeVar

import typer
from rich.console import Console
from typer import rich_utils
from typer._click.exceptions import ClickException, NoArgsIsHelpError

from sk_deploy.errors import SkDeployError
from sk_deploy.settings.base import Settings

S = TypeVar("S", bound=Settings)

#: the width of what goes to a pipe, a file or a CI log: wide enough that no table is cut; a table takes only the
#: width of its content, so nothing is padded to it
PIPE_WIDTH = 1000
#: the width of --help off a terminal: whole option names and a readable line
HELP_WIDTH = 160


class App(typer.Typer):
    """The typer app, run so that a usage error is one line (``error: ... (see sk-deploy CMD --help)``, exit 2)
    in place of typer's boxed panel, and ``--help`` off a terminal is laid out wide enough for whole option
    names."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if rich_utils.MAX_WIDTH is None and not sys.stdout.isatty():
            rich_utils.MAX_WIDTH = HELP_WIDTH
        stop_on_sigint()
        command = typer.main.get_command(self)
        try:
            code = command.main(*args, standalone_mode=False, **kwargs)
        except NoArgsIsHelpError as exc:  # a bare ``sk-deploy`` (or group): its help, as click does
            command.main([*(exc.ctx.protected_args if exc.ctx else []), "--help"], standalone_mode=False)
            sys.exit(2)
        except ClickException as exc:
            ctx = getattr(exc, "ctx", None)
            where = ctx.command_path if ctx is not None else "sk-deploy"
            raise _one_line(f"{exc.format_message()} (see {where} --help)", exc.exit_code) from None
        except typer.Abort:
            raise _one_line("aborted", 130) from None
        sys.exit(code if isinstance(code, int) else 0)


def stop_on_sigint() -> None:
    """Let SIGINT raise KeyboardInterrupt, as it does by default, also where this process was started with SIGINT
    ignored: a shell without job control (a script, CI) ignores it in what it starts with ``&``, and Python keeps
    that at start-up, so Ctrl-C or ``kill -INT`` would not stop ``bench`` or ``tune`` with their partial report.
    From the main thread only (the one place signal handlers can be set)."""
    if threading.current_thread() is threading.main_thread() and signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _one_line(message: str, code: int) -> SystemExit:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return SystemExit(code)


app = App(
    name="sk-deploy",
    help="Deploy attention CNNs (SKNet, SENet): PyTorch -> clean ONNX -> TensorRT / ONNX Runtime -> HTTP.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(width=None if sys.stdout.isatty() else PIPE_WIDTH)
err_console = Console(stderr=True)


class _Lines:
    """A status off a terminal, where rich's live spinner prints nothing: a wait that lasts past ``AFTER_S``
    prints its message as a line on stderr, and each later message (a log shows what is being waited for); a
    quick answer, an error included, stays one line."""

    AFTER_S = 1.0

    def __init__(self, message: str) -> None:
        import threading

        self.message, self.shown, self.lock = message, False, threading.Lock()
        self.timer = threading.Timer(self.AFTER_S, self._show)
        self.timer.daemon = True

    def _show(self) -> None:
        with self.lock:
            self.shown = True
            err_console.print(f"[dim]{self.message}[/]", highlight=False, soft_wrap=True)

    def update(self, message: str) -> None:
        """The new message: printed now if the wait has already been shown."""
        self.message = message
        if self.shown:
            self._show()

    def __enter__(self) -> _Lines:
        self.timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.timer.cancel()


def waiting(message: str) -> Any:
    """A context with ``update(message)``: rich's spinner on a terminal, a line per message elsewhere."""
    return err_console.status(message) if err_console.is_terminal else _Lines(message)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"sk-deploy {version('sk-deploy')}")
        except PackageNotFoundError:
            print("sk-deploy (not installed: no version)")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="Print the version and exit."),
) -> None:
    """Deploy attention CNNs (SKNet, SENet): PyTorch -> clean ONNX -> TensorRT / ONNX Runtime -> HTTP."""

def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one error line for a person and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def note(message: str, style: str = "yellow", label: str = "note") -> None:
    """One line on stderr for a person: ``note: ...`` (or ``warning: ...``)."""
    err_console.print(f"[{style}]{label}:[/] {message}", highlight=False, soft_wrap=True)


def one_number_profile(text: str | None, option: str = "--batch-profile") -> None:
    """Say what a batch profile of one number means (``8`` is ``8:8:8``: that batch size only), rather than
    letting it pass silently."""
    if text is not None and text.strip().isdigit():
        n = text.strip()
        note(f"{option} {n} means {n}:{n}:{n}: an engine takes batch {n} only; give MIN:OPT:MAX (for example "
             f"1:{n}:{n}) for a range")


def with_config(settings: S, names: dict[str, str]) -> S:
    """``settings`` with the ``[serving]`` values of its ``--config`` file for the options not given on the command
    line (``names``: each file key -> the command's field), said in one line; a bad file is one error line."""
    path = settings.config  # type: ignore[attr-defined]
    if path is None:
        return settings
    from sk_deploy.serving_config import read_settings

    try:
        values = read_settings(path)
    except SkDeployError as exc:
        from rich.markup import escape

        raise fail(escape(str(exc))) from None  # the message names the [serving] table
    taken = {key: value for key, value in values.items() if names[key] not in settings.model_fields_set}
    if taken:
        shown = ", ".join(f"{key} {value:g}" for key, value in taken.items())
        err_console.print(f"[dim]from {path}:[/] {shown}", highlight=False, soft_wrap=True)
    return settings.model_copy(update={names[key]: value for key, value in taken.items()})
