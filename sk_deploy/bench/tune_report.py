"""The tune's report: one JSON document (the grid, the choice, the command, the machine), Markdown and a rich
table of the grid, a PNG plot of the sustained rate per setting, and the chosen settings as a TOML file that
``serve --config`` and ``triton-repo --config`` take."""

from __future__ import annotations

from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sk_deploy.bench.machine import describe_machine, describe_short, machine_libraries
from sk_deploy.bench.open_loop import MEETS_RULE
from sk_deploy.bench.plots import plots_or_why, pyplot, save_figure
from sk_deploy.bench.tune import TuneConfig, TuneResult
from sk_deploy.bundle import Bundle, atomic_write_bytes, atomic_write_json
from sk_deploy.serving_config import write_settings

FORMAT = "sk-deploy-tune"
FILES = {"json": "tune.json", "md": "tune.md"}
PLOT = "tune.png"
METHOD = ("each candidate: a fresh `sk-deploy serve` on 127.0.0.1; a closed-loop probe (2 x max batch x instances "
          "clients, 4 to 64) gives its capacity C; open-loop steps bisect [0, 1.1 C] from 0.7 of it (the upper bound "
          "raised to 1.5 x a rate that meets the target until one misses) for the highest offered rate that meets "
          f"the target ({MEETS_RULE}); the finalists, the candidates with the highest sustained rates, are "
          "served again and held at that rate (then at 0.85 of it, and of that) for 5 times as long, since short steps "
          "flatter a rate just above capacity; the choice is the finalist with the highest rate held")


def build_tune_report(config: TuneConfig, result: TuneResult, command: str, load_before: list[float] | None,
                      interrupted: bool = False, machine: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON-ready report of a tune."""
    bundle = Bundle.open(config.bundle)
    choice = result.choice
    grid = [c.to_dict(config.p99_ms) for c in result.candidates]
    notes = [n for n in (result.instances_note,) if n]
    if interrupted:
        notes.insert(0, "interrupted: a partial tune")
    if bundle.weights.get("source") == "random":
        notes.append("random weights: latency does not depend on the values")
    notes.append("the load generator runs on the same cores as the server: its CPU time counts against the server")
    machine = machine or describe_machine()
    return {
        "format": FORMAT, "format_version": 1, "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command, "complete": not interrupted and all(c["status"] != "pending" for c in grid),
        "interrupted": interrupted, "bundle": str(bundle.path), "model": bundle.model_name,
        "input": bundle.manifest_input().get("shape"), "backend": result.backend, "precision": config.precision,
        "p99_target_ms": config.p99_ms, "method": METHOD,
        "config": {k: (list(v) if isinstance(v, tuple) else str(v) if isinstance(v, Path) else v)
                   for k, v in asdict(config).items()},
        "machine": machine, "load_before": load_before, "load_after": machine.get("load_average"),
        "seconds": round(result.seconds, 1), "grid": grid,
        "choice": choice.to_dict(config.p99_ms) if choice else None, "notes": notes,
    }


def _num(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def choice_line(report: dict[str, Any]) -> str:
    """One sentence: the chosen setting and its figures, or that none met the target."""
    c = report["choice"]
    target = report["p99_target_ms"]
    if c is None:
        return f"no setting met p99 <= {target:g} ms at any rate tried"
    setting = (f"chosen: max batch {c['max_batch']}, max delay {c['max_delay_ms']:g} ms, {c['instances']} "
               f"instance{'' if c['instances'] == 1 else 's'}")
    if c["finalist"]:
        return (f"{setting}: holds {c['verified_per_s']:g} requests/s over the longer step with p99 "
                f"{_num(c['verified_p99_ms'])} ms <= {target:g} ms ({c['verified_ok_per_s']} ok/s, mean batch "
                f"{c['verified_mean_batch_size'] or '-'}; {c['sustained_per_s']:g}/s in the short steps, capacity "
                f"{_num(c['capacity_per_s'])}/s closed loop)")
    return (f"{setting}: sustains {c['sustained_per_s']:g} requests/s with p99 {_num(c['p99_ms'])} ms <= "
            f"{target:g} ms ({c['ok_per_s']} ok/s, mean batch {c['mean_batch_size'] or '-'}; capacity "
            f"{_num(c['capacity_per_s'])}/s closed loop)")


def _tried(steps: list[dict[str, Any]]) -> str:
    return ", ".join(f"{t['offered_per_s']:g}{'+' if t['meets'] else '-'}" for t in steps) or "-"


def _row(c: dict[str, Any]) -> list[str]:
    held = (f"{_num(c['verified_per_s'])} ({_tried(c['verify_tried'])})" if c["finalist"] else "-")
    return [str(c["max_batch"]), f"{c['max_delay_ms']:g}", str(c["instances"]), c["status"],
            _num(c["capacity_per_s"]), _num(c["sustained_per_s"]), _num(c["p99_ms"]), _num(c["ok_per_s"]),
            str(c["mean_batch_size"] or "-"), _tried(c["tried"]), held, _num(c["verified_p99_ms"]),
            f"{c['seconds']:g}", c["reason"] or ""]


COLUMNS = ("max batch", "delay ms", "instances", "status", "capacity/s", "sustained/s", "p99 ms", "ok/s",
           "mean batch", "rates tried (+ met, - missed)", "held/s, long step (tried)", "held p99 ms", "s", "note")
RIGHT = {0, 1, 2, 4, 5, 6, 7, 8, 11, 12}


def tune_markdown(report: dict[str, Any], plot: str | None = None, heading: str = "#") -> str:
    """The tune for people: the command, the machine, the grid, the choice."""
    m = report["machine"]
    lines = [
        f"{heading} Tune: {report['model']} on {report['backend']} {report['precision']}, p99 <= "
        f"{report['p99_target_ms']:g} ms", "",
        f"Reproduce: `{report['command']}` ({report['date']}, {report['seconds']} s"
        f"{'' if report['complete'] else ', partial'})", "",
        f"Machine: {describe_short(m)}; {machine_libraries(m)}; CPU flags: "
        f"{', '.join(m.get('cpu_features') or []) or '-'}; load average before / after: {report['load_before']} / "
        f"{report['load_after']}.", "",
        f"Method: {report['method']}.", "",
        "| " + " | ".join(COLUMNS) + " |",
        "| " + " | ".join("---:" if i in RIGHT else "---" for i in range(len(COLUMNS))) + " |",
    ]
    lines += ["| " + " | ".join(_row(c)) + " |" for c in report["grid"]]
    lines += ["", f"**{choice_line(report)}**"]
    if plot:
        lines += ["", f"![tune]({plot})"]
    lines += ["", *[f"- {n}" for n in report["notes"]]]
    return "\n".join(lines) + "\n"


def tune_table(report: dict[str, Any]) -> Any:
    """The grid as a rich Table."""
    from rich.table import Table

    table = Table(title=f"{report['model']} on {report['backend']} {report['precision']}: sustained requests/s "
                  f"under p99 <= {report['p99_target_ms']:g} ms", title_justify="left")
    for i, column in enumerate(COLUMNS):
        table.add_column(column, justify="right" if i in RIGHT else "left")
    for c in report["grid"]:
        table.add_row(*_row(c))
    return table


def write_tune_plot(report: dict[str, Any], out: Path) -> Path | None:
    """tune.png: the sustained rate against max batch, a line per delay and instance count; a PlotsUnavailable
    without matplotlib, None when nothing was measured."""
    plt = pyplot()
    measured = [c for c in report["grid"] if c["status"] == "ok"]
    if not measured:
        return None
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    for instances in sorted({c["instances"] for c in measured}):
        for delay in sorted({c["max_delay_ms"] for c in measured}):
            line = sorted((c for c in measured if c["instances"] == instances and c["max_delay_ms"] == delay),
                          key=lambda c: c["max_batch"])
            if line:
                ax.plot([c["max_batch"] for c in line], [c["sustained_per_s"] for c in line], marker="o",
                        linestyle="-" if instances == 1 else "--",
                        label=f"delay {delay:g} ms, {instances} inst.")
    choice = report["choice"]
    if choice:
        ax.plot([choice["max_batch"]], [choice["sustained_per_s"]], marker="*", markersize=16, color="tab:red",
                linestyle="none", label="chosen")
    batches = sorted({c["max_batch"] for c in measured})
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_xlabel("max batch")
    ax.set_ylabel(f"sustained requests/s with p99 <= {report['p99_target_ms']:g} ms")
    ax.set_ylim(bottom=0)
    ax.set_title(f"{report['model']} on {report['backend']} {report['precision']}: tune", loc="left")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return save_figure(fig, out / PLOT, report["machine"])


def write_tune_report(report: dict[str, Any], out: Path, with_plots: bool = True) -> tuple[list[Path], str | None]:
    """tune.json, tune.md (and tune.png) into ``out``; the paths, and why there is no plot without matplotlib."""
    out.mkdir(parents=True, exist_ok=True)
    plots, why = plots_or_why(lambda: [p for p in (write_tune_plot(report, out),) if p], with_plots)
    atomic_write_json(out / FILES["json"], report)
    atomic_write_bytes(out / FILES["md"], tune_markdown(report, plots[0].name if plots else None).encode())
    return [out / name for name in FILES.values()] + plots, why


def write_choice(report: dict[str, Any], path: Path) -> Path | None:
    """The chosen settings as ``path`` (TOML, ``serving_config``); None when nothing met the target."""
    c = report["choice"]
    if c is None:
        return None
    tuned = {"model": report["model"], "backend": report["backend"], "precision": report["precision"],
             "p99_target_ms": report["p99_target_ms"], "sustained_per_s": c["sustained_per_s"],
             "p99_ms": c["p99_ms"], "held_per_s": c["verified_per_s"], "held_p99_ms": c["verified_p99_ms"],
             "date": report["date"]}
    return write_settings(path, {k: c[k] for k in ("max_batch", "max_delay_ms", "instances")}, tuned,
                          comment=f"written by: {report['command']}\nsk-deploy serve BUNDLE --config {path.name}; "
                                  f"sk-deploy triton-repo BUNDLE --config {path.name} ...")
