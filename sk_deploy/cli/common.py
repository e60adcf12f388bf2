"""What every command shares: the typer app, the two consoles, the one-line failure, list options."""

from __future__ import annotations

import sys
from typing import Any

import typer
from rich.console import Console
from typer import rich_utils
from typer._click.core import ParameterSource
from typer._click.exceptions import ClickException, NoArgsIsHelpError

from sk_deploy.errors import SkDeployError

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


#: The shared vocabulary: every option of every command is one of these, with the same meaning everywhere (the
#: README's "Options" table; tests/test_cli_vocabulary.py holds each command to it). Times are milliseconds and
#: say so (-ms); lists are one comma-separated value; --precision is fp32 by default or required.
VOCABULARY: dict[str, str] = {
    "--access-log": "log every request",
    "--allow-remote": "allow a host that is not loopback",
    "--arrivals": "open-loop arrivals: constant or poisson",
    "--auto-exclude": "keep the fewest most sensitive layers float until the gate passes",
    "--backend": "one backend (predict, serve: the Predictor's; triton-repo: Triton's)",
    "--backends": "backends to measure, comma-separated",
    "--batch-buckets": "batch sizes batches are padded to for a backend capturing CUDA graphs, comma-separated",
    "--batch-profile": "batch sizes to serve as MIN:OPT:MAX (an engine's optimisation profile)",
    "--batch-sizes": "batch sizes to measure, comma-separated (1,8,32)",
    "--build-engine": "auto, always or never build a TensorRT engine",
    "--body-timeout-ms": "how long a request's body may take to arrive after its headers",
    "--budget-ms": "the time a whole run may take",
    "--bundle": "a bundle directory",
    "--calib-size": "photos of --images to calibrate on",
    "--concurrency": "numbers of concurrent clients, comma-separated",
    "--config": "a TOML file of serving settings (from tune); options given on the command line win",
    "--decode-threads": "threads decoding pictures",
    "--device": "the PyTorch device (auto, cpu, cuda, cuda:N)",
    "--drain-ms": "how long a stopping server answers 503 before it stops",
    "--duration-ms": "timed milliseconds per row or step",
    "--engine": "a TensorRT engine file of the bundle",
    "--ensemble": "also a Triton ensemble taking encoded pictures",
    "--exclude": "op types or node names to keep float32, comma-separated",
    "--exporter": "the torch exporter",
    "--finalists": "tune's best candidates verified over longer steps",
    "--force": "replace an existing output",
    "--fuse-preprocess": "the graph takes uint8 NHWC pictures",
    "--gate": "refuse a graph that misses its accuracy gate",
    "--gmacs": "count GMACs",
    "--grpc-port": "port to serve KServe v2 over gRPC on",
    "--grpc-url": "HOST:PORT of a KServe v2 gRPC endpoint",
    "--hardware-compat": "which GPUs an engine may run on",
    "--high-precision": "the type of an int8 graph's non-quantized part: fp16 or fp32",
    "--holdout-size": "other photos of --images to measure accuracy on",
    "--header-timeout-ms": "how long a request's headers may take to arrive",
    "--host": "address to listen on",
    "--images": "a folder of photos (JPEG/PNG/WebP), searched recursively",
    "--input-size": "input height and width",
    "--instance-kind": "Triton instance kind: gpu or cpu",
    "--instances": "model instances: serve's inference threads, Triton's instance count",
    "--json": "print JSON",
    "--labels": "a CSV of FILE,CLASS_INDEX ground-truth labels",
    "--limit": "photos of --images to use",
    "--log-level": "uvicorn log level",
    "--max-abs": "largest allowed absolute logit error",
    "--max-aspect-ratio": "longest over shortest side of a picture decoded",
    "--max-batch": "largest batch one run or request batch takes",
    "--max-body-mb": "largest request body",
    "--max-connections": "open connections allowed",
    "--max-delay-ms": "longest wait for a batch to fill",
    "--max-in-flight": "open-loop requests in flight at most",
    "--max-picture-mb": "largest encoded picture (Triton ensemble)",
    "--max-pixels": "largest picture decoded",
    "--max-queue": "pictures allowed to wait",
    "--max-queue-delay-ms": "Triton's dynamic batcher delay",
    "--max-requests": "requests per step at most",
    "--max-runs": "timed runs per row at most",
    "--method": "calibration method",
    "--min-cosine": "smallest allowed cosine similarity",
    "--min-runs": "timed runs per row at least",
    "--min-top1": "smallest allowed top-1 agreement",
    "--model": "a registered model name",
    "--name": "the model's name in Triton",
    "--opset": "ONNX opset",
    "--ort-tensorrt": "ONNX Runtime's TensorRT provider in Triton",
    "--out": "the directory to write",
    "--p99-ms": "the p99 latency target",
    "--plots": "draw PNG plots",
    "--port": "port to listen on",
    "--precision": "one precision: fp32 (the default), fp16, int8 or tf32 (GPUs: the fp32 graph with TF32)",
    "--precisions": "precisions to measure, comma-separated",
    "--preferred-batch-sizes": "Triton's preferred batch sizes, comma-separated",
    "--preprocess": "the pictures' preprocessing preset (import)",
    "--pretrained": "the timm checkpoint from the Hugging Face hub",
    "--protocol": "http or grpc",
    "--recompute-bn": "recompute BatchNorm statistics on --images before export",
    "--recompute-bn-count": "photos of --images --recompute-bn uses",
    "--request-rate": "open-loop request rates (requests/s), comma-separated",
    "--runtime": "the Predictor's backend inside Triton's Python backend",
    "--seed": "the seed of random arrivals",
    "--set": "recipe keys to override, comma-separated key.path=value pairs (run)",
    "--target": "the int8 form: auto, tensorrt or cpu",
    "--threads": "ONNX Runtime intra-op threads",
    "--timeout-ms": "how long one request may take",
    "--timing-cache": "TensorRT timing cache file",
    "--top-k": "classes to show or ask for",
    "--verify": "check the ONNX files against PyTorch",
    "--version": "print the version",
    "--warmup-ms": "warm-up milliseconds per row",
    "--weights": "a checkpoint file",
    "--work-dir": "a writable directory for a read-only bundle's copy",
    "--workspace": "TensorRT builder workspace, GiB",
}


def one_number_profile(text: str | None, option: str = "--batch-profile") -> None:
    """Say what a batch profile of one number means (``8`` is ``8:8:8``: that batch size only), rather than
    letting it pass silently."""
    if text is not None and text.strip().isdigit():
        n = text.strip()
        note(f"{option} {n} means {n}:{n}:{n}: an engine takes batch {n} only; give MIN:OPT:MAX (for example "
             f"1:{n}:{n}) for a range")


def warn_renamed(old: str, new: str) -> None:
    """The one-line deprecation warning of an old option spelling (kept for one release)."""
    note(f"{old} is deprecated and will be removed in the next release; use {new}", label="warning")


def renamed(value: Any, old_value: Any, old: str, new: str, convert: Any = None) -> Any:
    """The value of an option renamed ``old`` -> ``new``: ``old_value`` (converted) with a warning when the old
    spelling was given, else ``value``."""
    if old_value is None or old_value is False:
        return value
    warn_renamed(old, new)
    return convert(old_value) if convert is not None else old_value


def items(values: list[str] | None, what: str, default: str = "", cast: Any = str) -> tuple:
    """A list option, one comma-separated value (``--batch-sizes 1,8,32``); repeating the option still works for
    one release, with a warning. Empty: ``default``."""
    values = list(values or ([default] if default else []))
    if len(values) > 1:
        note(f"repeating {what} is deprecated and will be removed in the next release; give one comma-separated "
             f"list: {what} {','.join(values)}", label="warning")
    return split(",".join(values), what, cast)


def file_settings(ctx: typer.Context, path: Any, params: dict[str, tuple[str, ...]]) -> dict[str, Any]:
    """The serving settings of the ``--config`` file at ``path`` (None: none) for the options not given on the
    command line (``params``: each settings key -> the command's parameter names for it), said in one line;
    a bad file is one error line."""
    if path is None:
        return {}
    from sk_deploy.serving_config import read_settings

    try:
        settings = read_settings(path)
    except SkDeployError as exc:
        from rich.markup import escape

        raise fail(escape(str(exc))) from None  # the message names the [serving] table
    taken = {key: value for key, value in settings.items()
             if not any(ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE for name in params[key])}
    if taken:
        shown = ", ".join(f"{key} {value:g}" for key, value in taken.items())
        err_console.print(f"[dim]from {path}:[/] {shown}", highlight=False, soft_wrap=True)
    return taken
