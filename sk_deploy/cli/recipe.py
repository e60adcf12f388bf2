"""``sk-deploy run`` (a recipe, every stage), ``sk-deploy evaluate`` (accuracy against labels),
``sk-deploy optimize`` and ``sk-deploy import`` (ONNX files this project did not export)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from sk_deploy.cli import render
from sk_deploy.cli.common import UserError, app, console, err_console, fail, note, split, waiting
from sk_deploy.jsonout import dumps

STATUS_STYLE = {"done": "green", "unchanged": "dim", "skipped": "yellow", "failed": "bold red"}


@app.command("run")
def run_command(
    recipe_file: Annotated[Path, typer.Argument(metavar="RECIPE", help="A recipe (export/*.toml).")],
    set_values: Annotated[list[str] | None, typer.Option("--set", help="Recipe keys to override, comma-separated "
                                                         "key.path=value pairs (calibration.count=128,bench.warmup_ms=0"
                                                         "); may be repeated.")] = None,
    out: Annotated[Path | None, typer.Option(help="Bundle directory (default: the recipe's `out`, else "
                                             "bundles/<recipe name>).")] = None,
) -> None:
    """Run a recipe: export, verify, quantize per precision, build (TensorRT), evaluate, bench, report; each stage
    skipped when its inputs and settings are unchanged."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from sk_deploy.recipe.report import REPORT_FILES, rich_table
    from sk_deploy.recipe.run import Hooks, RecipeRun, StageResult
    from sk_deploy.recipe.schema import load_recipe, split_sets

    try:
        recipe = load_recipe(recipe_file, [pair for value in set_values or [] for pair in split_sets(value)])
    except UserError as exc:
        raise fail(str(exc)) from None
    target = out or Path(recipe.out or Path("bundles") / recipe_file.stem)
    started = time.perf_counter()
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn())
    stages = 2 + 4 * len(recipe.precisions) + 1
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task(f"{recipe_file.name}", total=stages)
        current = {"name": ""}

        def start(name: str) -> None:
            current["name"] = name
            bar.update(task, description=name)

        def end(result: StageResult) -> None:
            style = STATUS_STYLE[result.status]
            reason = f": {result.reason}" if result.reason else ""
            bar.console.print(f"[{style}]{result.status:>9}[/] {result.name} ({result.seconds:.1f} s){reason}",
                              highlight=False, soft_wrap=True)
            bar.advance(task)

        hooks = Hooks(start, lambda message: bar.update(task, description=f"{current['name']}: {message}"), end)
        run = RecipeRun(recipe, target.resolve(), hooks)
        try:
            results = run.execute()
        except UserError as exc:
            raise fail(str(exc)) from None
    seconds = time.perf_counter() - started
    report_file = target / REPORT_FILES["json"]
    if report_file.is_file():
        report = json.loads(report_file.read_text(encoding="utf-8"))
        render.show(rich_table(report))
        for message in report["accuracy"]["notes"]:
            note(message)
        for row in report["skipped"]:
            note(f"not run here: {row['precision']} {row['backend']}: {row['reason']}")
    ran = [r for r in results if r.status == "done"]
    summary = f"{len(ran)} stages run" if ran else "nothing to redo: every stage's inputs are unchanged"
    console.print(f"{summary}; {seconds:.1f} s; bundle {target} (report.md, report.json)", highlight=False)
    if run.failed:
        raise fail(f"{len(run.failed)} stage(s) failed: {', '.join(r.name for r in run.failed)}")


@app.command("evaluate")
def evaluate_command(
    bundle_dir: Annotated[Path, typer.Argument(metavar="BUNDLE", help="Bundle directory.")],
    images: Annotated[Path, typer.Option(help="Folder of photos: one folder per class, or any layout with "
                                         "--labels.")],
    labels: Annotated[Path | None, typer.Option(help="CSV of FILE,CLASS_INDEX (ImageNet validation style).")]
    = None,
    limit: Annotated[int, typer.Option(min=1, help="Labelled photos to use.")] = 1000,
    backends: Annotated[str, typer.Option(help="Backends to run, comma-separated (ort-cpu, openvino, ort-cuda, "
                                          "ort-tensorrt, tensorrt), or all: every precision each serves, bf16 "
                                          "included; what cannot run here is listed with the reason.")] = "all",
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
) -> None:
    """Top-1 / top-5 of every graph of a bundle against ground-truth labels, with agreement with float32; into the
    manifest (stages.evaluate)."""
    from rich.table import Table

    from sk_deploy.bundle import Bundle
    from sk_deploy.evaluate import evaluate_bundle

    try:
        bundle = Bundle.open(bundle_dir)
        with waiting(f"evaluating {bundle_dir}..."):
            chosen = None if backends == "all" else split(backends, "--backends")
            report = evaluate_bundle(bundle, images, labels, limit, backends=chosen)
    except UserError as exc:
        raise fail(str(exc)) from None
    if as_json:
        console.print_json(dumps(report.to_dict()))
        return
    accuracy = report.labelled and report.trained
    table = Table(title=f"{report.count} photos of {report.images}", title_justify="left")
    columns = ["file", "precision", "backend", *(["top-1", "top-5"] if accuracy else []), "top-1 agreement",
               "top-5 overlap", "cosine (mean)"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("file", "precision", "backend") else "right")
    for row in report.rows:
        a = row.agreement
        figures = [f"{row.top1:.1%}", f"{row.top5:.1%}"] if accuracy and row.top1 is not None else []
        table.add_row(row.file, row.precision, row.backend, *figures, f"{a.top1_agreement:.1%}",
                      f"{a.top5_overlap:.1%}", f"{a.cosine_mean:.5f}")
    render.show(table)
    if not report.labelled:
        note("no labels (no --labels, no folder per class): agreement with float32 only")
    for message in report.notes:
        note(message)
    for row in report.skipped:
        what = " ".join(str(v) for v in (row["precision"], row["file"]) if v) or "every graph"
        note(f"not run here: {what} on {row['backend']}: {row['reason']}")


@app.command("optimize")
def optimize_command(
    source: Annotated[Path, typer.Argument(metavar="IN.onnx", help="An ONNX file (any exporter).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The optimised ONNX file to write.")],
    input_size: Annotated[int, typer.Option(help="Height and width for dynamic spatial axes in the check.")] = 224,
) -> None:
    """The cleanup and the SK select rewrite on any ONNX file, checked against it in ONNX Runtime on random input;
    every SK block rewritten or skipped with the reason."""
    from sk_deploy.graph.foreign import optimize_file

    try:
        with waiting(f"optimising {source}..."):
            result = optimize_file(source, out, input_size)
    except UserError as exc:
        raise fail(str(exc)) from None
    _blocks(result)
    console.print(f"wrote {out}: max abs difference from {source.name} {result.max_abs:.3g} on random input "
                  f"{tuple(result.checked_shape)} (ONNX Runtime CPU)", highlight=False)


def _blocks(result: object) -> None:
    sk = result.reports["sk_select"]  # type: ignore[attr-defined]
    console.print(f"SK blocks: {sk['rewritten']} rewritten, {len(sk['skipped'])} left alone; nodes "
                  f"{sk['nodes_before']} -> {sk['nodes_after']}", highlight=False)
    for block, what in result.blocks:  # type: ignore[attr-defined]
        console.print(f"  {block}: {what}", highlight=False, soft_wrap=True)


@app.command("import")
def import_command(
    source: Annotated[Path, typer.Argument(metavar="IN.onnx", help="An ONNX classifier (any exporter).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Bundle directory to write.")],
    preprocess: Annotated[str, typer.Option(help="The pictures' preprocessing at the graph's input size: "
                                            "imagenet (mean/std of ImageNet) or inception (0.5/0.5).")]
    = "imagenet",
    fuse_preprocess: Annotated[bool, typer.Option(help="model.onnx takes uint8 NHWC pictures and normalises them "
                                                  "itself.")] = False,
    force: Annotated[bool, typer.Option(help="Replace a non-empty output directory.")] = False,
) -> None:
    """Make a bundle from an ONNX file: it is model.raw.onnx (the reference `verify` compares against), its
    optimised form model.onnx; quantize, build, serve and bench then work on it."""
    from sk_deploy.graph.foreign import import_onnx

    try:
        with waiting(f"importing {source}..."):
            bundle, result = import_onnx(source, out, preprocess, fuse_preprocess, force)
    except UserError as exc:
        raise fail(str(exc)) from None
    _blocks(result)
    checked = "" if fuse_preprocess else f"; max abs difference from {source.name} {result.max_abs:.3g}"
    console.print(f"wrote bundle {bundle.path}{checked}", highlight=False)
