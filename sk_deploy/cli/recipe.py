"""``sk-deploy run`` (a recipe, every stage), ``sk-deploy evaluate`` (accuracy against labels),
``sk-deploy optimize`` and ``sk-deploy import`` (ONNX files this project did not export)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from sk_deploy.cli import render
from sk_deploy.cli.common import console, err_console, fail, note, waiting
from sk_deploy.cli.options import command
from sk_deploy.errors import SkDeployError
from sk_deploy.jsonout import dumps
from sk_deploy.settings.graph import ImportSettings, OptimizeSettings
from sk_deploy.settings.recipe import EvaluateSettings, RunSettings

STATUS_STYLE = {"done": "green", "unchanged": "dim", "skipped": "yellow", "failed": "bold red"}


@command(RunSettings)
def run_command(settings: RunSettings) -> None:
    """Run a recipe: export, verify, quantize per precision, build (TensorRT), evaluate, bench, report; each stage
    skipped when its inputs and settings are unchanged."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    from sk_deploy.recipe.report import REPORT_FILES, rich_table
    from sk_deploy.recipe.run import Hooks, RecipeRun, StageResult
    from sk_deploy.recipe.schema import load_recipe, split_sets

    recipe_file = settings.recipe
    try:
        recipe = load_recipe(recipe_file, [pair for value in settings.set for pair in split_sets(value)])
    except SkDeployError as exc:
        raise fail(str(exc)) from None
    target = settings.out or Path(recipe.out or Path("bundles") / recipe_file.stem)
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
        except SkDeployError as exc:
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


@command(EvaluateSettings)
def evaluate_command(settings: EvaluateSettings) -> None:
    """Top-1 / top-5 of every graph of a bundle against ground-truth labels, with agreement with float32; into the
    manifest (stages.evaluate)."""
    from rich.table import Table

    from sk_deploy.bundle import Bundle
    from sk_deploy.evaluate import evaluate_bundle, labels_file

    try:
        bundle = Bundle.open(settings.bundle)
        labels = labels_file(settings.labels, settings.images)
        with waiting(f"evaluating {settings.bundle}..."):
            report = evaluate_bundle(bundle, settings.images, labels, settings.limit,
                                     backends=settings.backends or None)
    except SkDeployError as exc:
        raise fail(str(exc)) from None
    if settings.as_json:
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


@command(OptimizeSettings)
def optimize_command(settings: OptimizeSettings) -> None:
    """The cleanup and the SK select rewrite on any ONNX file, checked against it in ONNX Runtime on random input;
    every SK block rewritten or skipped with the reason."""
    from sk_deploy.graph.foreign import optimize_file

    source, out = settings.source, settings.out
    try:
        with waiting(f"optimising {source}..."):
            result = optimize_file(source, out, settings.input_size)
    except SkDeployError as exc:
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


@command(ImportSettings)
def import_command(settings: ImportSettings) -> None:
    """Make a bundle from an ONNX file: it is model.raw.onnx (the reference `verify` compares against), its
    optimised form model.onnx; quantize, build, serve and bench then work on it."""
    from sk_deploy.graph.foreign import import_onnx

    source = settings.source
    try:
        with waiting(f"importing {source}..."):
            bundle, result = import_onnx(source, settings.out, settings.preprocess, settings.fuse_preprocess,
                                         settings.force)
    except SkDeployError as exc:
        raise fail(str(exc)) from None
    _blocks(result)
    checked = "" if settings.fuse_preprocess else f"; max abs difference from {source.name} {result.max_abs:.3g}"
    console.print(f"wrote bundle {bundle.path}{checked}", highlight=False)
