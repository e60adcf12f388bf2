"""The speed-up a gated precision buys on this machine, measured once when its gate passes and recorded beside
its accuracy figures (``stages.precision[key].speed``), so that ``--precision auto`` can say it, choose the faster
CPU backend for it, or pass over a precision that is slower here, from a figure and never a guess.

What is compared: fp32 on the backend ``auto`` picks for fp32, against the precision's graph on every CPU backend
where its gate passed for this bundle (on a GPU machine: on the backend ``auto`` serves it with), each opened
alone (two compiled models in one process disturb each other's timings), warmed, then timed at one batch size;
medians of ``runs``. One process, one round each: a figure to choose by, not a benchmark
(benchmarks/default_path compares the paths side by side, interleaved).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from sk_deploy.backends import gated_backends
from sk_deploy.bundle import MODEL_FILE, Bundle
from sk_deploy.machine import BackendUnavailable, Machine, probe_machine

BATCH = 8
RUNS = 5


def _median_ms(predictor: Any, batch: int, runs: int) -> tuple[float, str]:
    """(median milliseconds of ``runs`` runs at ``batch``, the backend) of an opened Predictor, closed after."""
    with predictor:
        example = predictor.example(batch)
        predictor.warmup((batch,), repeats=2)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            predictor.predict(example)
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times), predictor.backend


def measure_speedup(bundle: Bundle, precision: str, key: str, machine: Machine | None = None, batch: int = BATCH,
                    runs: int = RUNS) -> dict[str, Any]:
    """``precision`` (its gate recorded under ``key``: a graph file, or the precision for a hint such as bf16)
    against fp32 on this machine: the figures recorded under ``speed`` (device, batch, fp32's backend and median,
    and under ``backends`` each timed backend's median in ms and speed-up). A BackendUnavailable when no backend
    here may serve it."""
    from sk_deploy.runtime.auto_precision import device_name
    from sk_deploy.runtime.cpu_choice import backend_gate, gated_runners_here
    from sk_deploy.runtime.predictor import Predictor, plan

    machine = machine or probe_machine()
    file = key if key.endswith(".onnx") else MODEL_FILE
    if machine.cuda:
        served = plan(bundle, "auto", precision, machine)
        if served.file != key:
            raise BackendUnavailable(f"not timed: auto serves {precision} from {served.file} on {served.backend} "
                                     f"here, not {key}")
        backends = [served.backend]
    else:
        backends = [name for name in gated_runners_here(precision, machine) if backend_gate(bundle, key, name)[0]]
        if not backends:
            raise BackendUnavailable(f"not timed: its gate passed on no CPU backend here "
                                     f"({', '.join(gated_backends())})")
    fp32_ms, fp32_backend = _median_ms(Predictor(bundle, "auto", "fp32", machine=machine), batch, runs)
    timed = {}
    for name in backends:
        opened = (Predictor(bundle, name, precision, machine=machine) if machine.cuda
                  else Predictor(bundle, name, precision, machine=machine, file=file))
        ms, _ = _median_ms(opened, batch, runs)
        timed[name] = {"ms": round(ms, 3), "speedup": round(fp32_ms / ms, 3)}
    return {"device": device_name(machine), "fp32_backend": fp32_backend, "batch": batch, "runs": runs,
            "fp32_ms": round(fp32_ms, 3), "backends": timed,
            "method": "one process, each backend opened alone, warmed, median of the runs"}
