"""Benchmark reports: one JSON document per run, and from it CSV for machines, Markdown and a rich table for
people. trtexec's fields are laid out for TensorRT rows so the figures compare with its output directly."""

from __future__ import annotations

import csv
import io
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sk_deploy.bench.latency import BenchRun
from sk_deploy.bench.machine import describe_machine, describe_short, machine_libraries
from sk_deploy.bundle import atomic_write_bytes, atomic_write_json

FORMAT = "sk-deploy-bench"
STATS = ("min", "p50", "p90", "p95", "p99", "max", "mean")
TIMING = ("latency_ms: wall time of one predict() per batch, host input to host logits (so on a GPU it includes "
          "both copies); device_ms: the GPU's own time of each phase from CUDA events where the backend exposes "
          "it; images_per_s: batch x timed runs / their wall time; vs_baseline: ratios to the PyTorch eager "
          "float32 row of the same batch in this run (speedup_p50 above 1 is faster)")
FILES = {"json": "bench.json", "csv": "bench.csv", "md": "bench.md"}


def build_report(run: BenchRun, command: str, interrupted: bool = False,
                 machine: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON-ready report of ``run`` (its rows so far; ``interrupted`` when it was stopped early)."""
    bundle = run.bundle
    source = bundle.weights.get("source")
    described = bundle.manifest_input()
    covered = sum(len(run.config.batches) if r.batch is None else 1 for r in run.rows)
    notes = []
    if interrupted:
        notes.append(f"interrupted: {covered} of {run.planned} cells measured or skipped before Ctrl-C; "
                     "this is a partial report")
    if source == "random":
        notes.append("random weights: latency does not depend on the values")
    return {
        "format": FORMAT, "format_version": 1,
        "date": datetime.fromtimestamp(run.started, UTC).isoformat(timespec="seconds"),
        "command": command, "complete": not interrupted and covered == run.planned, "interrupted": interrupted,
        "bundle": str(bundle.path), "model": bundle.model_name, "weights": source,
        "input": {k: described.get(k) for k in ("name", "dtype", "layout", "shape")},
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(run.config).items()},
        "machine": machine or describe_machine(), "load_before": run.load_before,
        "baseline": "torch fp32: PyTorch eager, float32, the same network, measured first in this run",
        "timing": TIMING, "rows": [row_dict(r.to_dict()) for r in run.rows], "notes": notes,
    }


def row_dict(row: dict[str, Any]) -> dict[str, Any]:
    """A row as reported: with trtexec's fields added to TensorRT rows timed on the GPU."""
    if str(row["backend"]).startswith("tensorrt") and row.get("device_ms"):
        row = {**row, "trtexec": trtexec_fields(row)}
    return row


def trtexec_fields(row: dict[str, Any]) -> dict[str, Any]:
    """trtexec's summary of a row: Throughput (qps: batches per second), Latency (H2D + GPU compute + D2H),
    H2D Latency, GPU Compute Time and D2H Latency (min, max, mean, median, p90, p95, p99 in ms), Total Host
    Walltime and Total GPU Compute Time (s)."""
    device = row["device_ms"]

    def pick(stats: dict[str, float]) -> dict[str, float]:
        return {"min": stats["min"], "max": stats["max"], "mean": stats["mean"], "median": stats["p50"],
                "percentile_90": stats["p90"], "percentile_95": stats["p95"], "percentile_99": stats["p99"]}

    compute = device["compute"]
    return {
        "throughput_qps": row["batches_per_s"], "latency_ms": pick(device["latency"]),
        "h2d_latency_ms": pick(device["h2d"]), "gpu_compute_time_ms": pick(compute),
        "d2h_latency_ms": pick(device["d2h"]), "total_host_walltime_s": row["seconds"],
        "total_gpu_compute_time_s": round(compute["mean"] * compute["n"] / 1000, 4),
    }


CSV_COLUMNS = ("backend", "precision", "batch", "status", "baseline", "file", "device", "runs",
               *(f"latency_{s}_ms" for s in STATS), "images_per_s", "batches_per_s", "speedup_p50_vs_baseline",
               "throughput_vs_baseline", "h2d_p50_ms", "compute_p50_ms", "d2h_p50_ms", "peak_rss_mb",
               "timing", "device_resident_p50_ms", "gpu_device_peak_mb", "gpu_memory_source",
               "torch_allocator_peak_mb", "first_run_ms", "reason")


def to_csv(report: dict[str, Any]) -> str:
    """One line per row, flat columns (empty where a figure does not apply)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in report["rows"]:
        latency = row.get("latency_ms") or {}
        device = row.get("device_ms") or {}
        ratios = row.get("vs_baseline") or {}
        flat = {k: row.get(k) for k in CSV_COLUMNS if k in row}
        flat |= {f"latency_{s}_ms": latency.get(s) for s in STATS}
        flat |= {f"{phase}_p50_ms": device.get(phase, {}).get("p50") for phase in ("h2d", "compute", "d2h")}
        flat["device_resident_p50_ms"] = (row.get("device_resident_ms") or {}).get("p50")
        flat |= {"speedup_p50_vs_baseline": ratios.get("speedup_p50"),
                 "throughput_vs_baseline": ratios.get("throughput")}
        writer.writerow({k: "" if v is None else v for k, v in flat.items()})
    return buffer.getvalue()


def _resident(row: dict[str, Any]) -> str:
    return _ms((row.get("device_resident_ms") or {}).get("p50"))


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3f}" if value < 10 else f"{value:.2f}" if value < 100 else f"{value:.1f}"


def _ratio(row: dict[str, Any], key: str) -> str:
    ratios = row.get("vs_baseline")
    return f"{ratios[key]:.2f}x" if ratios else "-"


def measured(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows that were measured."""
    return [r for r in report["rows"] if r["status"] == "ok"]


def skipped(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows that were skipped, each with its reason."""
    return [r for r in report["rows"] if r["status"] != "ok"]


def to_markdown(report: dict[str, Any], plots: list[str] | None = None, heading: str = "#") -> str:
    """The report for people: the command, the machine, one table of every measured row, the GPU phases and
    trtexec's fields where measured, the skipped rows with their reasons, the plots."""
    m, config = report["machine"], report["config"]
    lib_text = machine_libraries(m)
    state = "complete" if report["complete"] else "**partial: interrupted**" if report["interrupted"] else "partial"
    lines = [
        f"{heading} Benchmark: {report['model']} ({'x'.join(map(str, report['input']['shape'][1:]))}, "
        f"{report['input']['dtype']})", "",
        f"Reproduce: `{report['command']}` ({report['date']}, {state})", "",
        f"Machine: {describe_short(m)}; {lib_text}; load average before / after: {report.get('load_before')} / "
        f"{m.get('load_average')}.", "",
        f"Each row: {config['warmup_s']} s warm-up, then timed runs for {config['duration_s']} s (at least "
        f"{config['min_runs']}). Baseline: {report['baseline']}. Latency is the wall time of one batch, host in "
        "to host out; \"vs eager\" is the baseline's p50 over this row's p50 at the same batch.", "",
        "| backend | precision | batch | runs | min ms | p50 ms | p90 ms | p95 ms | p99 ms | max ms | mean ms "
        "| images/s | vs eager (p50) | vs eager (images/s) | peak RSS MB |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in measured(report):
        lat = r["latency_ms"]
        lines.append(f"| {r['backend']} | {r['precision']} | {r['batch']} | {r['runs']} | "
                     + " | ".join(_ms(lat[s]) for s in STATS)
                     + f" | {r['images_per_s']:.1f} | {_ratio(r, 'speedup_p50')} | {_ratio(r, 'throughput')} | "
                     f"{r.get('peak_rss_mb') or '-'} |")
    gpu = [r for r in measured(report) if r.get("device_ms") or r.get("device_resident_ms")]
    if gpu:
        lines += ["", f"{heading}# GPU phases (CUDA events, median ms; the rows' own latency is host-to-host)", "",
                  "| backend | precision | batch | H2D | compute | D2H | latency (sum) | device-resident p50 | "
                  "GPU peak used MB (device) | torch allocator peak MB |",
                  "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for r in gpu:
            d = r.get("device_ms") or {phase: {"p50": None} for phase in ("h2d", "compute", "d2h", "latency")}
            lines.append(f"| {r['backend']} | {r['precision']} | {r['batch']} | {_ms(d['h2d']['p50'])} | "
                         f"{_ms(d['compute']['p50'])} | {_ms(d['d2h']['p50'])} | {_ms(d['latency']['p50'])} | "
                         f"{_resident(r)} | {r.get('gpu_device_peak_mb') or '-'} | "
                         f"{r.get('torch_allocator_peak_mb') or '-'} |")
    trt = [r for r in measured(report) if r.get("trtexec")]
    if trt:
        lines += ["", f"{heading}# TensorRT rows in trtexec's terms", "",
                  "| engine | batch | Throughput qps | Latency min / mean / median / p99 / max ms | GPU Compute "
                  "min / mean / median / p99 / max ms | H2D mean ms | D2H mean ms | Total Host Walltime s |",
                  "| --- | ---: | ---: | --- | --- | ---: | ---: | ---: |"]
        for r in trt:
            t = r["trtexec"]

            def five(s: dict[str, float]) -> str:
                return " / ".join(_ms(s[k]) for k in ("min", "mean", "median", "percentile_99", "max"))

            lines.append(f"| {r['backend']} {r['precision']} | {r['batch']} | {t['throughput_qps']:.1f} | "
                         f"{five(t['latency_ms'])} | {five(t['gpu_compute_time_ms'])} | "
                         f"{_ms(t['h2d_latency_ms']['mean'])} | {_ms(t['d2h_latency_ms']['mean'])} | "
                         f"{t['total_host_walltime_s']} |")
        lines += ["", "trtexec enqueues back to back on several streams; these rows run one synchronous batch at "
                  "a time, so compare GPU Compute Time first."]
    no_split = sorted({f"{r['backend']} ({r['split_note']})" for r in measured(report)
                       if not r.get("device_ms") and r.get("split_note")})
    if no_split:
        lines += ["", "Host-to-device / compute split: " + "; ".join(no_split) + "."]
    if skipped(report):
        lines += ["", f"{heading}# Skipped", ""]
        for r in skipped(report):
            where = f" batch {r['batch']}" if r["batch"] is not None else ""
            lines.append(f"- {r['backend']} {r['precision']}{where}: {r['reason']}")
    if plots:
        lines += ["", *[f"![{Path(p).stem}]({p})" for p in plots]]
    if report["notes"]:
        lines += ["", *[f"- {n}" for n in report["notes"]]]
    return "\n".join(lines) + "\n"


def write_result(out: Path, stem: str, result: dict[str, Any], markdown: str) -> str:
    """A benchmark's figures as ``out/<stem>.json`` and its report as ``out/<stem>.md`` (both written atomically);
    returns the Markdown, for the script to print."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / f"{stem}.json", result)
    atomic_write_bytes(out / f"{stem}.md", markdown.encode("utf-8"))
    return markdown


def write_report(report: dict[str, Any], out: Path, with_plots: bool = True) -> tuple[list[Path], str | None]:
    """Write bench.json, bench.csv, bench.md (and the PNG plots when matplotlib is there) into ``out``; the
    paths written and, when the plots were skipped, the one line saying why."""
    from sk_deploy.bench.plots import plots_or_why, write_plots

    out.mkdir(parents=True, exist_ok=True)
    plots, why = plots_or_why(lambda: write_plots(report, out), with_plots)
    atomic_write_json(out / FILES["json"], report)
    atomic_write_bytes(out / FILES["csv"], to_csv(report).encode())
    atomic_write_bytes(out / FILES["md"], to_markdown(report, [p.name for p in plots]).encode())
    return [out / name for name in FILES.values()] + plots, why


def rich_table(report: dict[str, Any]) -> Any:
    """The measured rows as a rich Table for the terminal (the GPU compute column only when measured)."""
    from rich.table import Table

    rows = measured(report)
    gpu = any(r.get("device_ms") for r in rows)
    table = Table(title=f"{report['model']}: ms per batch, images/s, speed-up over PyTorch eager fp32 (*)",
                  title_justify="left")
    columns = ["backend", "prec", "batch", "p50", "p90", "p99", "img/s", "vs eager", *(["GPU comp"] if gpu else []),
               "RSS MB"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("backend", "prec") else "right", no_wrap=True)
    for r in rows:
        lat = r["latency_ms"]
        compute = (r.get("device_ms") or {}).get("compute")
        cells = [r["backend"] + ("*" if r["baseline"] else ""), r["precision"], str(r["batch"]), _ms(lat["p50"]),
                 _ms(lat["p90"]), _ms(lat["p99"]), f"{r['images_per_s']:.1f}", _ratio(r, "speedup_p50")]
        if gpu:
            cells.append(_ms(compute["p50"]) if compute else "-")
        table.add_row(*cells, f"{r['peak_rss_mb']:.0f}" if r.get("peak_rss_mb") else "-")
    return table


HTTP_FORMAT = "sk-deploy-bench-http"
HTTP_FILES = {"json": "bench-http.json", "md": "bench-http.md"}


def build_http_report(config: Any, steps: list[Any], pictures: int, command: str, interrupted: bool = False,
                      machine: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON-ready report of an HTTP load sweep (``config`` a LoadConfig, ``steps`` its StepResults)."""
    notes = ["the server's figures are the difference of two /metrics scrapes around each step: they include any "
             "other traffic the server had meanwhile"]
    if interrupted:
        notes.insert(0, f"interrupted: {len(steps)} of {len(config.concurrency)} steps done; a partial report")
    return {
        "format": HTTP_FORMAT, "format_version": 1, "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command, "url": config.url, "complete": not interrupted and len(steps) == len(config.concurrency),
        "interrupted": interrupted, "pictures": pictures,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
        "client_machine": machine or describe_machine(), "steps": [s.to_dict() for s in steps], "notes": notes,
    }


def _distribution(server: dict[str, Any] | None) -> str:
    histogram = (server or {}).get("batch_size") or {}
    return ", ".join(f"{k}: {v}" for k, v in (histogram.get("distribution") or {}).items()) or "-"


def _errors(step: dict[str, Any]) -> str:
    bad = {k: v for k, v in step["statuses"].items() if not k.startswith("2")}
    return ", ".join(f"{k} x{v}" for k, v in bad.items()) or "0"


def http_markdown(report: dict[str, Any], heading: str = "#") -> str:
    """The load sweep for people: one row per concurrency level."""
    c = report["config"]
    lines = [
        f"{heading} HTTP load: {report['url']}/v1/classify", "",
        f"Reproduce: `{report['command']}` ({report['date']}; {report['pictures']} pictures, each step "
        f"{c['duration_s']} s or {c['max_requests']} requests; client: {describe_short(report['client_machine'])})",
        "",
        "| clients | requests | errors | requests/s | p50 ms | p90 ms | p99 ms | server batches | mean batch "
        "| batch sizes (count) |",
        "| ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for s in report["steps"]:
        lat = s["latency_ms"] or {}
        server = s["server"] or {}
        lines.append(f"| {s['concurrency']} | {s['requests']} | {_errors(s)} | {s['requests_per_s']:.1f} | "
                     f"{_ms(lat.get('p50'))} | {_ms(lat.get('p90'))} | {_ms(lat.get('p99'))} | "
                     f"{_num(server.get('batches'))} | {server.get('mean_batch_size') or '-'} | "
                     f"{_distribution(s['server'])} |")
    lines += ["", *[f"- {n}" for n in report["notes"]]]
    lines += [f"- step with {s['concurrency']} clients: {s['server_note']}"
              for s in report["steps"] if s["server_note"]]
    return "\n".join(lines) + "\n"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def http_table(report: dict[str, Any]) -> Any:
    """The load sweep as a rich Table."""
    from rich.table import Table

    table = Table(title=f"{report['url']}/v1/classify: closed-loop clients; the server's batches, mean batch "
                  "size and batch sizes (count) from its /metrics", title_justify="left")
    for column in ("clients", "reqs", "errors", "req/s", "p50 ms", "p90 ms", "p99 ms", "batches", "mean", "sizes"):
        table.add_column(column, justify="left" if column in ("errors", "sizes") else "right",
                         no_wrap=column != "sizes")
    for s in report["steps"]:
        lat = s["latency_ms"] or {}
        server = s["server"] or {}
        table.add_row(str(s["concurrency"]), str(s["requests"]), _errors(s), f"{s['requests_per_s']:.1f}",
                      _ms(lat.get("p50")), _ms(lat.get("p90")), _ms(lat.get("p99")), _num(server.get("batches")),
                      str(server.get("mean_batch_size") or "-"), _distribution(s["server"]))
    return table


def write_http_report(report: dict[str, Any], out: Path) -> list[Path]:
    """Write bench-http.json and bench-http.md into ``out``; their paths."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / HTTP_FILES["json"], report)
    atomic_write_bytes(out / HTTP_FILES["md"], http_markdown(report).encode())
    return [out / name for name in HTTP_FILES.values()]
