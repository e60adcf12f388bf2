"""PNG plots of a benchmark report: latency vs batch and throughput vs batch, one line per backend and
precision. matplotlib (the ``bench`` extra) is imported here only, with its Agg backend (no display)."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sk_deploy.bench.machine import describe_short
from sk_deploy.bundle import atomic_path

PLOTS = {"latency": "latency_vs_batch.png", "throughput": "throughput_vs_batch.png"}
INSTALL = "matplotlib is not installed, so no plots: pip install 'sk-deploy[bench]' (or matplotlib)"


class PlotsUnavailable(RuntimeError):
    """matplotlib is missing; the message says what to install."""


def pyplot() -> Any:
    """matplotlib.pyplot on its Agg backend; a PlotsUnavailable without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        raise PlotsUnavailable(INSTALL) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: Path, machine: dict[str, Any]) -> Path:
    """Finish ``fig`` (the machine in small print at its foot), write it to ``path`` as PNG atomically, close it."""
    import matplotlib.pyplot as plt

    fig.text(0.01, 0.01, describe_short(machine)[:140], fontsize=7, color="0.35")
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path


def plots_or_why(draw: Callable[[], list[Path]], wanted: bool = True) -> tuple[list[Path], str | None]:
    """The paths ``draw()`` wrote, or none and the one line saying why (matplotlib missing); none when not
    ``wanted``."""
    if not wanted:
        return [], None
    try:
        return draw(), None
    except PlotsUnavailable as exc:
        return [], str(exc)


def series(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Measured rows grouped by ``backend precision``, each group sorted by batch."""
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["status"] == "ok":
            groups[f"{row['backend']} {row['precision']}"].append(row)
    return {name: sorted(group, key=lambda r: r["batch"]) for name, group in groups.items()}


def nice_log_ticks(low: float, high: float) -> list[float]:
    """The 1-2-5 values (..., 1, 2, 5, 10, 20, ...) from the largest at or below ``low`` to the smallest at or
    above ``high``: a log axis's labelled ticks, with every point between two of them."""
    low, high = max(low, 1e-6), max(high, low, 1e-6)
    decade = 10.0 ** math.floor(math.log10(low))
    ticks = [decade * m for m in (1, 2, 5) if decade * m <= low][-1:]
    while ticks[-1] < high or len(ticks) < 2:
        mantissa = round(ticks[-1] / 10 ** math.floor(math.log10(ticks[-1]) + 1e-9))
        ticks.append(ticks[-1] * (2.5 if mantissa == 2 else 2))
    return [float(f"{t:.6g}") for t in ticks]


def write_plots(report: dict[str, Any], out: Path, prefix: str = "") -> list[Path]:
    """Write the two PNGs into ``out`` (names prefixed with ``prefix``); their paths. A PlotsUnavailable
    without matplotlib."""
    plt = pyplot()
    groups = series(report["rows"])
    if not groups:
        return []
    batches = sorted({r["batch"] for group in groups.values() for r in group})
    paths = []
    for kind, filename in PLOTS.items():
        fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
        for name, group in groups.items():
            x = [r["batch"] for r in group]
            style = {"marker": "o", "linewidth": 2.2 if group[0]["baseline"] else 1.6,
                     "linestyle": "--" if group[0]["baseline"] else "-"}
            if kind == "latency":
                p50 = [r["latency_ms"]["p50"] for r in group]
                low = [p - r["latency_ms"]["min"] for p, r in zip(p50, group, strict=True)]
                high = [r["latency_ms"]["p90"] - p for p, r in zip(p50, group, strict=True)]
                ax.errorbar(x, p50, yerr=[low, high], capsize=3, label=name, **style)
            else:
                ax.plot(x, [r["images_per_s"] for r in group], label=name, **style)
        ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.set_xlabel("batch size")
        if kind == "latency":
            ax.set_yscale("log")
            ticks = nice_log_ticks(min(r["latency_ms"]["min"] for g in groups.values() for r in g),
                                   max(r["latency_ms"]["p90"] for g in groups.values() for r in g))
            ax.set_yticks(ticks, [f"{t:g}" for t in ticks])  # every tick shown is labelled, the data inside them
            ax.yaxis.set_minor_locator(plt.NullLocator())
            ax.set_ylim(ticks[0], ticks[-1])
            ax.set_ylabel("latency per batch, ms (p50; bars: min to p90)")
            ax.set_title(f"{report['model']}: latency vs batch", loc="left")
        else:
            ax.set_ylabel("throughput, images/s")
            ax.set_ylim(bottom=0)
            ax.set_title(f"{report['model']}: throughput vs batch", loc="left")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        paths.append(save_figure(fig, out / f"{prefix}{filename}", report["machine"]))
    return paths
