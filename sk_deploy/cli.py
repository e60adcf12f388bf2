"""The ``sk-deploy`` command line: each command is a thin call into one module of the package."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="sk-deploy",
    help="Deploy attention CNNs (SKNet, SENet): PyTorch -> clean ONNX -> TensorRT / ONNX Runtime -> HTTP.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print one error line for a person and return the Exit to raise."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@app.command("models")
def models_command(
    gmacs: Annotated[bool, typer.Option(help="Count GMACs (builds each network once, a few seconds).")] = True,
) -> None:
    """List the registered networks: parameters, GMACs at the default size, input size, pretrained source."""
    from sk_deploy.models import create_model, get_spec, list_models
    from sk_deploy.models.profile import count_macs, count_params

    table = Table(title="Registered models")
    for column, justify in (("name", "left"), ("params", "right"), ("GMACs", "right"),
                            ("input", "left"), ("pretrained (Hugging Face hub)", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for name in list_models():
        spec = get_spec(name)
        model = create_model(name)
        macs = f"{count_macs(model, spec.input_size) / 1e9:.2f}" if gmacs else "-"
        table.add_row(
            name, f"{count_params(model) / 1e6:.2f}M", macs,
            "x".join(map(str, spec.input_size)), spec.hub_id or "-",
        )
    console.print(table)


@app.command("predict")
def predict_command(
    images: Annotated[list[Path], typer.Argument(help="Image files (JPEG, PNG, WebP, ...).")],
    model: Annotated[str, typer.Option("--model", "-m", help="Registered model name (see `sk-deploy models`).")]
    = "sknet50",
    weights: Annotated[Path | None, typer.Option(help="Checkpoint: .safetensors, or .pth/.pt/.bin.")] = None,
    pretrained: Annotated[bool, typer.Option(help="Load the timm checkpoint from the Hugging Face hub.")] = False,
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Classes to show per image.")] = 5,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Classify images with a PyTorch model and print the top-k labels and probabilities."""
    import json
    from dataclasses import asdict

    import torch

    from sk_deploy.images import ImageError, load_batch
    from sk_deploy.labels import imagenet_labels
    from sk_deploy.models import UnknownModelError, get_spec
    from sk_deploy.models.weights import WeightsError, build_model
    from sk_deploy.runtime.classify import top_k as rank
    from sk_deploy.runtime.device import DeviceError, resolve_device

    try:
        spec = get_spec(model)
        target = resolve_device(device)
        batch = load_batch(list(images), spec.preprocess)
        with console.status(f"loading {model}..."):
            net = build_model(model, weights=weights, pretrained=pretrained).to(target)
    except (UnknownModelError, ImageError, WeightsError, DeviceError) as exc:
        raise fail(str(exc)) from None
    if weights is None and not pretrained:
        err_console.print(
            f"[yellow]note:[/] {model} has random weights (no --weights or --pretrained): labels are meaningless"
        )
    with torch.inference_mode():
        logits = net(torch.from_numpy(batch).to(target)).float().cpu().numpy()
    results = rank(logits, top_k, imagenet_labels())
    if as_json:
        payload = [{"image": str(path), "model": model, "device": str(target),
                    "predictions": [asdict(p) for p in ranked]} for path, ranked in zip(images, results, strict=True)]
        print(json.dumps(payload, indent=2))
        return
    for path, ranked in zip(images, results, strict=True):
        console.print(f"[bold]{path}[/] ({model}, {target})", highlight=False, soft_wrap=True)
        table = Table()
        table.add_column("#", justify="right")
        table.add_column("class", justify="right")
        table.add_column("label")
        table.add_column("probability", justify="right")
        for i, p in enumerate(ranked, 1):
            table.add_row(str(i), str(p.index), p.label, f"{p.probability:.4f}")
        console.print(table)


def main() -> None:
    """Entry point for ``python -m sk_deploy``."""
    app()
