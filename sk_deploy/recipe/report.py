"""The recipe's report: one row per artifact and backend this machine ran (file, precision, size, accuracy, p50
latency and images/s per batch size, each ratio to PyTorch eager fp32 from the same bench run), as
``report.json`` and ``report.md`` in the bundle; rows that could not run are listed with their reason."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sk_deploy.bundle import Bundle, atomic_write_bytes, atomic_write_json
from sk_deploy.recipe.schema import Recipe

REPORT_FILES = {"json": "report.json", "md": "report.md"}
EAGER = "PyTorch eager"


def _accuracy(bundle: Bundle) -> tuple[dict[tuple[str, str, str], dict[str, Any]], dict[str, Any]]:
    """The evaluate stage's rows by (file, precision, backend), and the stage's record."""
    evaluate = bundle.stage("evaluate")
    return {(r["file"], r["precision"], r.get("backend", "ort-cpu")): r for r in evaluate.get("rows", [])}, evaluate


def build_report(bundle: Bundle, recipe: Recipe) -> dict[str, Any]:
    """The JSON-ready report of the bundle's recorded figures for ``recipe``'s precisions."""
    accuracy, evaluate = _accuracy(bundle)
    files = bundle.file_entries()
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, Any]] = []
    for name, form in recipe.forms().items():
        bench_rows = bundle.stage("bench").get(name, {}).get("rows", [])
        by_backend: dict[str, dict[str, Any]] = {}
        for cell in bench_rows:
            if cell["baseline"] and form.precision != "fp32":
                continue  # each precision's run measured the baseline again; it is reported once, under fp32
            if cell["status"] != "ok":
                skipped.append({"precision": name, "backend": cell["backend"], "batch": cell["batch"],
                                "reason": cell["reason"]})
                continue
            torch_row = cell["backend"] == "torch"
            file = EAGER if torch_row else (cell.get("file") or form.file)
            row = by_backend.setdefault(cell["backend"], {
                "file": file, "precision": name, "backend": cell["backend"],
                "bytes": None if torch_row else files.get(file, {}).get("bytes"),
                "top1": None, "top5": None, "top1_agreement": None, "cosine_mean": None, "batches": {}})
            figures = accuracy.get((file, name, cell["backend"]))
            if not torch_row and figures is not None:
                row.update(top1=figures["top1"], top5=figures["top5"],
                           top1_agreement=figures["agreement"]["top1_agreement"],
                           cosine_mean=figures["agreement"]["cosine_mean"])
            ratios = cell.get("vs_baseline") or {}
            row["batches"][str(cell["batch"])] = {
                "p50_ms": cell["latency_ms"]["p50"], "images_per_s": cell["images_per_s"],
                "speedup_p50": ratios.get("speedup_p50"), "throughput": ratios.get("throughput")}
        rows.extend(by_backend.values())
    return {
        "format": "sk-deploy-report", "format_version": 1,
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "model": bundle.model_name,
        "target": recipe.target, "weights": bundle.weights.get("source"),
        "accuracy": {"images": evaluate.get("images"), "count": evaluate.get("count"),
                     "labelled": evaluate.get("labelled", False),
                     "meaningful": evaluate.get("accuracy_meaningful", False), "notes": evaluate.get("notes", [])},
        "batch_sizes": list(recipe.bench.batch_sizes),
        "baseline": f"{EAGER} fp32, measured in the same bench run as each row",
        "rows": rows, "skipped": skipped,
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _num(value: float | None, digits: int = 2, suffix: str = "") -> str:
    return "-" if value is None else f"{value:.{digits}f}{suffix}"


def header(report: dict[str, Any]) -> list[str]:
    """The table's column names (per batch size: p50, images/s, speed-up over eager fp32)."""
    columns = ["file", "precision", "backend", "MB", "top-1", "top-1 agreement"]
    for batch in report["batch_sizes"]:
        columns += [f"p50 ms b{batch}", f"img/s b{batch}", f"x eager b{batch}"]
    return columns


def cells(report: dict[str, Any], row: dict[str, Any]) -> list[str]:
    """One row's cells, in ``header`` order; top-1 only where the labels make it meaningful."""
    top1 = _pct(row["top1"]) if report["accuracy"]["meaningful"] else "-"
    out = [row["file"], row["precision"], row["backend"],
           _num(row["bytes"] / 1e6 if row["bytes"] else None, 1), top1, _pct(row["top1_agreement"])]
    for batch in report["batch_sizes"]:
        figures = row["batches"].get(str(batch), {})
        out += [_num(figures.get("p50_ms")), _num(figures.get("images_per_s"), 1),
                _num(figures.get("speedup_p50"), 2, "x")]
    return out


def to_markdown(report: dict[str, Any]) -> str:
    """The report as Markdown: notes, the table, what did not run."""
    lines = [f"# {report['model']} ({report['target']} target)", ""]
    accuracy = report["accuracy"]
    lines.append(f"Accuracy on {accuracy['count']} photos of {accuracy['images']}"
                 + ("" if accuracy["labelled"] else " (no labels: agreement with float32 only)") + ".")
    lines += [f"{note}." for note in accuracy["notes"]]
    lines += [f"Ratios: {report['baseline']}; above 1x is faster.", ""]
    columns = header(report)
    lines += ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    lines += ["| " + " | ".join(cells(report, row)) + " |" for row in report["rows"]]
    if report["skipped"]:
        lines += ["", "Not run here:", ""]
        lines += [f"- {s['precision']} {s['backend']}: {s['reason']}" for s in report["skipped"]]
    return "\n".join(lines) + "\n"


def write_report(bundle: Bundle, recipe: Recipe) -> dict[str, Any]:
    """Write ``report.json`` and ``report.md`` into the bundle and record them; returns the report."""
    report = build_report(bundle, recipe)
    atomic_write_json(bundle.path / REPORT_FILES["json"], report)
    atomic_write_bytes(bundle.path / REPORT_FILES["md"], to_markdown(report).encode("utf-8"))
    for name in REPORT_FILES.values():
        bundle.add_file(name, role="report")
    bundle.save()
    return report


def rich_table(report: dict[str, Any]) -> Any:
    """The report as a rich table for the terminal."""
    from rich.table import Table

    table = Table(title=f"{report['model']}: {report['target']} target", title_justify="left")
    for column in header(report):
        table.add_column(column, justify="left" if column in ("file", "precision", "backend") else "right")
    for row in report["rows"]:
        table.add_row(*cells(report, row))
    return table
