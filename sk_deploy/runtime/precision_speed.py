"""The speed-up a gated precision buys on this machine, measured once when its gate passes and recorded beside
its accuracy figures (``stages.precision[key].speed``), so that ``--precision auto`` can say it, or pass over a
precision that is slower here, from a figure and never a guess.

What is compared is what ``auto`` would serve: the precision on the backend ``auto`` picks for it against fp32 on
the backend ``auto`` picks for fp32, each opened alone (two compiled models in one process disturb each other's
timings), warmed, then timed at one batch size; medians of ``runs``. One process, one round each: a figure to
choose by, not a benchmark (benchmarks/default_path compares the paths side by side, interleaved).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from sk_deploy.bundle import Bundle
from sk_deploy.machine import BackendUnavailable, Machine, probe_machine

BATCH = 8
RUNS = 5


def _median_ms(bundle: Bundle, precision: str, machine: Machine, batch: int, runs: int) -> tuple[float, str]:
    """(median milliseconds of ``runs`` runs at ``batch``, the backend) of ``precision`` as ``auto`` serves it."""
    from sk_deploy.runtime.predictor import Predictor

    with Predictor(bundle, "auto", precision, machine=machine) as predictor:
        example = predictor.example(batch)
        predictor.warmup((batch,), repeats=2)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            predictor.predict(example)
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times), predictor.backend


def measure_speedup(bundle: Bundle, precision: str, machine: Machine | None = None, batch: int = BATCH,
                    runs: int = RUNS, file: str | None = None) -> dict[str, Any]:
    """``precision`` against fp32 on this machine, as ``auto`` would serve each: the figures recorded under
    ``speed`` (device, backends, batch, medians in ms, speed-up). With ``file``, a BackendUnavailable when
    ``auto`` serves another file of that precision here (then that file's figure is not this one's)."""
    from sk_deploy.runtime.auto_precision import device_name
    from sk_deploy.runtime.predictor import plan

    machine = machine or probe_machine()
    served = plan(bundle, "auto", precision, machine)
    if file is not None and served.file != file:
        raise BackendUnavailable(f"not timed: auto serves {precision} from {served.file} on {served.backend} here, "
                                 f"not {file}")
    fp32_ms, fp32_backend = _median_ms(bundle, "fp32", machine, batch, runs)
    ms, backend = _median_ms(bundle, precision, machine, batch, runs)
    return {"device": device_name(machine), "backend": backend, "fp32_backend": fp32_backend, "batch": batch,
            "runs": runs, "ms": round(ms, 3), "fp32_ms": round(fp32_ms, 3), "speedup": round(fp32_ms / ms, 3),
            "method": "one process, each precision opened alone, warmed, median of the runs"}
