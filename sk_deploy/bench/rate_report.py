"""The open-loop run's report (``bench-http --request-rate``): one JSON document, and from it Markdown and a rich
table for people, and two PNG plots against the offered rate: latency (p50, p99, the target) and the achieved
rate (answers/s, ok/s, beside the offered one)."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sk_deploy.bench.machine import describe_machine, describe_short, machine_libraries
from sk_deploy.bench.open_loop import KNEE_RULE, RateConfig, RateRun, knee
from sk_deploy.bench.plots import plots_or_why, pyplot, save_figure
from sk_deploy.bundle import atomic_write_bytes, atomic_write_json

FORMAT = "sk-deploy-bench-http-rate"
FILES = {"json": "bench-http-rate.json", "md": "bench-http-rate.md"}
PLOTS = {"latency": "latency_vs_rate.png", "achieved": "achieved_vs_rate.png"}
LATENCY = ("latency is measured from each request's scheduled send instant to its answer (no coordinated "
           "omission); percentiles are of the successful requests; achieved rates are answers (any status) and "
           "successes per second of the step, from its start to its last answer")


def build_rate_report(config: RateConfig, run: RateRun, pictures: int, command: str, interrupted: bool = False,
                      machine: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON-ready report of an open-loop run, with the knee when ``config.p99_ms`` is set."""
    machine = machine or describe_machine()
    notes = ["the server's figures are the difference of two /metrics scrapes around each step: they include any "
             "other traffic the server had meanwhile",
             "the load generator shares the machine with the server when both run here: its own CPU time counts "
             "against the server's"]
    if interrupted:
        notes.insert(0, f"interrupted: {len(run.steps)} of {len(config.rates)} rates done; a partial report")
    if run.single_note:
        notes.append(run.single_note)
    found = knee(run.steps, config.p99_ms) if config.p99_ms is not None else None
    single = run.single.to_dict() if run.single else None
    steps = [s.to_dict(config.p99_ms) for s in run.steps]
    for step in steps:
        p99 = (step["latency_ms"] or {}).get("p99")
        step["p99_vs_single_p50"] = round(p99 / single["p50"], 2) if p99 and single else None
    return {
        "format": FORMAT, "format_version": 1, "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command, "url": config.url, "protocol": config.protocol, "grpc_url": config.grpc_url,
        "complete": not interrupted and len(run.steps) == len(config.rates), "interrupted": interrupted,
        "pictures": pictures, "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
        "client_machine": machine, "load_average_after": machine.get("load_average"),
        "single_request_ms": single, "latency": LATENCY, "steps": steps,
        "p99_target_ms": config.p99_ms, "knee_rule": KNEE_RULE if config.p99_ms is not None else None,
        "knee_per_s": found.rate if found else None,
        "knee": found.to_dict(config.p99_ms) if found else None, "notes": notes,
    }


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 100 else f"{value:.0f}"


def _outcome(step: dict[str, Any]) -> tuple[str, str]:
    drops = ", ".join(f"{k} x{v}" for k, v in step["drops"].items()) or "0"
    errors = ", ".join(f"{k} x{v}" for k, v in step["errors_by_status"].items()) or "0"
    return drops, errors


def _batches(step: dict[str, Any]) -> tuple[str, str]:
    server = step["server"] or {}
    histogram = server.get("batch_size") or {}
    sizes = ", ".join(f"{k}: {v}" for k, v in (histogram.get("distribution") or {}).items()) or "-"
    return str(server.get("mean_batch_size") or "-"), sizes


def knee_line(report: dict[str, Any]) -> str | None:
    """One sentence: the knee and its figures, or that no rate met the target; None without a target."""
    target = report["p99_target_ms"]
    if target is None:
        return None
    k = report["knee"]
    if k is None:
        return f"knee: no rate met p99 <= {target:g} ms (the lowest offered rate already misses it)"
    return (f"knee: {k['offered_per_s']:g} requests/s offered meets p99 <= {target:g} ms (p99 "
            f"{_ms(k['latency_ms']['p99'])} ms, {k['ok_per_s']:.1f} ok/s, loss {k['loss']:.1%})")


def rate_markdown(report: dict[str, Any], plots: list[str] | None = None, heading: str = "#") -> str:
    """The open-loop run for people: one row per offered rate, the single-request latency, the knee."""
    c, single = report["config"], report["single_request_ms"]
    where = report["grpc_url"] + " (KServe v2 gRPC ModelInfer)" if report["protocol"] == "grpc" else \
        f"{report['url']}/v1/classify"
    lines = [
        f"{heading} Open-loop load: {where}", "",
        f"Reproduce: `{report['command']}` ({report['date']}; {report['pictures']} pictures; {c['arrivals']} "
        f"arrivals, seed {c['seed']}; each rate {c['duration_s']} s or {c['max_requests']} requests, at most "
        f"{c['max_in_flight']} in flight, timeout {c['timeout_s']} s)", "",
        f"Client: {describe_short(report['client_machine'])}; {machine_libraries(report['client_machine'])}; "
        f"CPU flags: {', '.join(report['client_machine'].get('cpu_features') or []) or '-'}; load average after: "
        f"{report['load_average_after']}.", "",
        "Single request (one at a time, this run): " + (f"p50 {_ms(single['p50'])} ms, p99 {_ms(single['p99'])} ms "
                                                        f"over {single['n']}" if single else "not measured") + ".",
        "",
        "| offered/s | scheduled | sent | drops | errors | answers/s | ok/s | p50 ms | p90 ms | p99 ms | max ms "
        "| p99 / single p50 | mean batch | batch sizes (count) | meets |",
        "| ---: | ---: | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for s in report["steps"]:
        lat = s["latency_ms"] or {}
        drops, errors = _outcome(s)
        mean, sizes = _batches(s)
        meets = "-" if s["meets"] is None else "yes" if s["meets"] else "no"
        lines.append(f"| {s['offered_per_s']:g} | {s['scheduled']} | {s['sent']} | {drops} | {errors} | "
                     f"{s['answers_per_s']:.1f} | {s['ok_per_s']:.1f} | {_ms(lat.get('p50'))} | "
                     f"{_ms(lat.get('p90'))} | {_ms(lat.get('p99'))} | {_ms(lat.get('max'))} | "
                     f"{s['p99_vs_single_p50'] or '-'} | {mean} | {sizes} | {meets} |")
    line = knee_line(report)
    if line:
        lines += ["", f"**{line}**; the rule: {report['knee_rule']}."]
    if plots:
        lines += ["", *[f"![{Path(p).stem}]({p})" for p in plots]]
    lines += ["", f"- {report['latency']}", *[f"- {n}" for n in report["notes"]]]
    lines += [f"- rate {s['offered_per_s']:g}/s: {s['server_note']}" for s in report["steps"] if s["server_note"]]
    return "\n".join(lines) + "\n"


def rate_table(report: dict[str, Any]) -> Any:
    """The open-loop run as a rich Table."""
    from rich.table import Table

    single = report["single_request_ms"]
    extra = f"; single request p50 {_ms(single['p50'])} ms" if single else ""
    table = Table(title=f"{report['grpc_url'] or report['url']}: open loop, {report['config']['arrivals']} "
                  f"arrivals{extra}", title_justify="left")
    columns = ("offered/s", "sent", "drops", "errors", "ans/s", "ok/s", "p50 ms", "p90 ms", "p99 ms", "max ms",
               "mean batch", "meets")
    for column in columns:
        table.add_column(column, justify="left" if column in ("drops", "errors", "meets") else "right")
    for s in report["steps"]:
        lat = s["latency_ms"] or {}
        drops, errors = _outcome(s)
        meets = "-" if s["meets"] is None else "yes" if s["meets"] else "no"
        table.add_row(f"{s['offered_per_s']:g}", str(s["sent"]), drops, errors, f"{s['answers_per_s']:.1f}",
                      f"{s['ok_per_s']:.1f}", _ms(lat.get("p50")), _ms(lat.get("p90")), _ms(lat.get("p99")),
                      _ms(lat.get("max")), _batches(s)[0], meets)
    return table


def write_rate_plots(report: dict[str, Any], out: Path) -> list[Path]:
    """latency_vs_rate.png and achieved_vs_rate.png in ``out``; a PlotsUnavailable without matplotlib."""
    plt = pyplot()
    steps = sorted(report["steps"], key=lambda s: s["offered_per_s"])
    if not steps:
        return []
    x = [s["offered_per_s"] for s in steps]
    paths = []
    for kind, filename in PLOTS.items():
        fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
        if kind == "latency":
            timed = [s for s in steps if s["latency_ms"]]
            for stat, style in (("p50", "-"), ("p99", "--")):
                ax.plot([s["offered_per_s"] for s in timed], [s["latency_ms"][stat] for s in timed], style,
                        marker="o", label=stat)
            if report["p99_target_ms"] is not None:
                ax.axhline(report["p99_target_ms"], color="0.4", linestyle=":", label="p99 target")
            if report["knee_per_s"] is not None:
                ax.axvline(report["knee_per_s"], color="tab:green", linestyle=":", label="knee")
            ax.set_yscale("log")
            ax.set_ylabel("latency from the scheduled send, ms")
            ax.set_title("open loop: latency vs offered rate", loc="left")
        else:
            ax.plot(x, x, color="0.6", linestyle=":", label="offered")
            ax.plot(x, [s["answers_per_s"] for s in steps], marker="o", label="answers/s")
            ax.plot(x, [s["ok_per_s"] for s in steps], marker="s", label="ok/s")
            ax.set_ylabel("achieved, requests/s")
            ax.set_ylim(bottom=0)
            ax.set_title("open loop: achieved vs offered rate", loc="left")
        ax.set_xlabel("offered rate, requests/s")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        paths.append(save_figure(fig, out / filename, report["client_machine"]))
    return paths


def write_rate_report(report: dict[str, Any], out: Path, with_plots: bool = True) -> tuple[list[Path], str | None]:
    """bench-http-rate.json, bench-http-rate.md and the plots into ``out``; the paths, and why there are no
    plots when matplotlib is missing."""
    out.mkdir(parents=True, exist_ok=True)
    plots, why = plots_or_why(lambda: write_rate_plots(report, out), with_plots)
    atomic_write_json(out / FILES["json"], report)
    atomic_write_bytes(out / FILES["md"], rate_markdown(report, [p.name for p in plots]).encode())
    return [out / name for name in FILES.values()] + plots, why
