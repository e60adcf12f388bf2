"""Which CPU backend ``auto`` picks for a precision, from the accuracy gates recorded in the bundle for each CPU
backend, the speed measured on this machine and what this machine has; and the one-line tip when a faster
precision has passed its gate in the bundle. The rule lives here, once: the table's auto rules
(``runtime.auto``) ask it, and through them ``plan``, the Predictor, ``serve`` and ``predict``.

A gated precision (int8, fp16) is served on a CPU backend only where its gate passed on that backend for this
bundle (``sk-deploy quantize`` judges each graph on every CPU backend serving it: ``stages.precision[file]
.backends``); a backend with no figure was never gated and is not served by ``auto``. Among the backends where it
passed, the one measured fastest on this CPU (``stages.precision[file].speed``, timed by quantize) is taken. When
nothing decides by measurement, the hardware rule: it follows benchmarks/results/cpu-2core/openvino.md (SKNet-50 at
224, one run, interleaved rounds): on an AVX-512 CPU OpenVINO beats ONNX Runtime at every precision it runs (fp32
pinned to f32 included), bf16 runs only on OpenVINO and only where the CPU computes bfloat16 natively, and OpenVINO
runs the bundle's int8 graph faster than ONNX Runtime runs its CPU form on a CPU with int8 dot products. Without
them, ONNX Runtime is the guess, though benchmarks/results/cpu-2core/default_path.md measured OpenVINO int8 ahead on
an AVX2-only CPU too: which is why a measured speed overrides the rule.
"""

from __future__ import annotations

from typing import Any

from sk_deploy.backends import BACKENDS, gated_backends, runners_of
from sk_deploy.bundle import Bundle, MissingGraph, graph_forms
from sk_deploy.machine import BackendUnavailable, Machine
from sk_deploy.precisions import PRECISIONS, Precision

RESULTS = "benchmarks/results/cpu-2core/openvino.md"


def _only_runner(precision: Precision, machine: Machine) -> str | None:
    """The one CPU backend running ``precision`` where only one does (bf16: OpenVINO); a BackendUnavailable when
    this machine lacks it or the CPU support the precision needs."""
    runners = runners_of(precision, "cpu")
    if precision.device != "cpu" or len(runners) != 1:
        return None
    missing = BACKENDS[runners[0]].machine_refusal(machine)
    if missing:
        raise BackendUnavailable(f"{precision} runs on the {runners[0]} backend, and {missing}")
    refusal = precision.cpu_refusal(machine.cpu)
    if refusal:
        raise BackendUnavailable(refusal)
    return runners[0]


def cpu_backend(bundle: Bundle | dict[str, Any], precision: str, machine: Machine) -> tuple[str, str]:
    """(backend, why) for ``precision`` of ``bundle`` on this machine's CPU; a BackendUnavailable where nothing
    runs it. A gated precision goes to a backend where its gate passed (the fastest measured here among them);
    otherwise, or when nothing was measured, the hardware rule."""
    only = _only_runner(Precision(precision), machine)
    if only is not None:
        native = Precision(precision).facts.native_cpu
        flags = ", ".join(machine.cpu.reported()) or "no AVX-512/VNNI/AMX flags"
        return only, (f"{precision} runs on {only} only" +
                      (f", and this CPU computes {native} natively ({flags})" if native else ""))
    missing = BACKENDS["openvino"].machine_refusal(machine)
    if missing:
        return "ort-cpu", (f"ONNX Runtime on the CPU, faster than PyTorch eager there (OpenVINO, faster still on "
                           f"AVX-512 CPUs: {missing})")
    preferred, why = _by_hardware(precision, machine)
    if not Precision(precision).gated:
        return preferred, why
    return _by_gates(Bundle.of(bundle), precision, machine, preferred, why)


def _by_hardware(precision: str, machine: Machine) -> tuple[str, str]:
    """The CPU backend this CPU's flags suggest for ``precision``, OpenVINO being installed."""
    cpu = machine.cpu
    flags = ", ".join(cpu.reported()) or "no AVX-512/VNNI/AMX flags"
    if precision == Precision.INT8 and cpu.int8_dot:
        return "openvino", (f"OpenVINO {machine.openvino_version} runs the bundle's int8 graph faster than ONNX "
                            f"Runtime on this CPU ({flags}; {RESULTS})")
    if precision == Precision.FP32 and "avx512f" in cpu.flags:
        return "openvino", (f"OpenVINO {machine.openvino_version} with f32 pinned is faster than ONNX Runtime on "
                            f"AVX-512 CPUs ({flags}; {RESULTS})")
    lacks = "int8 dot products (VNNI, AMX)" if precision == Precision.INT8 else "AVX-512"
    return "ort-cpu", (f"ONNX Runtime on the CPU: this CPU has no {lacks} ({flags}), and OpenVINO's lead was not "
                       "measured here for this bundle")


def _by_gates(bundle: Bundle, precision: str, machine: Machine, preferred: str, why: str) -> tuple[str, str]:
    """Among the CPU backends running ``precision`` here, those where its gate passed on this bundle: the one,
    or the fastest measured on this CPU, or ``preferred`` by the hardware rule when that cannot say."""
    licensed: dict[str, float | None] = {}
    refused: list[str] = []
    for name in gated_runners_here(precision, machine):
        try:
            file = gated_file(bundle, name, precision)
        except MissingGraph:
            continue
        figures, words = backend_gate(bundle, file, name)
        if figures is None:
            refused.append(f"{file} on {name}: {words}")
        else:
            licensed[name] = speedup_here(bundle, file, name, machine)
    if not licensed:
        return preferred, why  # gated nowhere: auto_precision passes the precision over, saying why
    if len(licensed) == 1:
        (name,) = licensed
        return name, (f"{precision} is served on {name}, the one CPU backend here where its gate passed "
                      f"({'; '.join(refused)})")
    if all(speed is not None for speed in licensed.values()):
        fastest = max(licensed, key=lambda n: licensed[n] or 0.0)
        timed = ", ".join(f"{n} {speed:.2f}x fp32" for n, speed in licensed.items())
        return fastest, (f"{fastest} measured fastest for {precision} on this CPU ({timed}), and its gate passed on "
                         "each")
    return preferred, f"{why}; its gate passed on {' and '.join(licensed)}, speed not measured on each here"


def gated_runners_here(precision: str, machine: Machine) -> list[str]:
    """The CPU backends this machine has that run ``precision`` and on which quantize judges its graphs: where
    ``auto`` may serve it, once its gate passed there."""
    return [name for name in runners_of(precision, "cpu")
            if name in gated_backends() and not BACKENDS[name].machine_refusal(machine)]


def gated_file(bundle: Bundle | dict[str, Any], backend: str, precision: str) -> str:
    """The bundle's ONNX graph of ``precision`` that ``backend`` serves: its preferred form (the table's
    ``prefers``), unless only another form passed its gate on that backend; a MissingGraph when there is none."""
    spec, bundle = BACKENDS[backend], Bundle.of(bundle)
    preferred = bundle.graph(precision, spec.device, prefer=spec.prefers)
    if backend not in gated_backends() or not Precision(precision).gated or Precision(precision).hint:
        return preferred
    forms = sorted(graph_forms(precision, spec.device), key=lambda form: form.file != preferred)
    return next((f.file for f in forms if bundle.has(f.file) and backend_gate(bundle, f.file, backend)[0]),
                preferred)


def backend_gate(bundle: Bundle | dict[str, Any], key: str, backend: str) -> tuple[dict[str, Any] | None, str]:
    """(the accuracy figures of ``stages.precision[key]`` on ``backend`` if its gate passed there, else None; a
    clause saying so). A backend quantize does not judge on (a GPU one) is held to the graph's own gate."""
    entry = Bundle.of(bundle).stage("precision").get(key) or {}
    if backend not in gated_backends():
        accuracy = entry.get("accuracy") or {}
        return (accuracy, "its gate passed") if accuracy.get("passed") else (None, "its gate did not pass")
    gate = (entry.get("backends") or {}).get(backend)
    if gate is None:
        return None, f"its gate was never measured on {backend} for this bundle"
    if "not_measured" in gate:
        return None, f"its gate was not measured on {backend} ({gate['not_measured']})"
    accuracy = gate.get("accuracy") or {}
    if not accuracy.get("passed"):
        return None, f"its gate failed on {backend} ({'; '.join(accuracy.get('failures') or ['no figures'])})"
    return accuracy, f"its gate passed on {backend}"


def backend_speed(speed: dict[str, Any] | None, backend: str) -> dict[str, Any] | None:
    """One backend's figures from a recorded ``speed`` (``runtime.precision_speed``): device, batch, its median
    ms and speed-up, and fp32's; None when that backend was not timed."""
    timed = ((speed or {}).get("backends") or {}).get(backend)
    if not timed or "speedup" not in timed:
        return None
    return {**{k: v for k, v in (speed or {}).items() if k != "backends"}, "backend": backend, **timed}


def speedup_here(bundle: Bundle | dict[str, Any], key: str, backend: str, machine: Machine) -> float | None:
    """The speed-up over fp32 recorded for ``key`` on ``backend``, if it was measured on this machine's
    processor."""
    from sk_deploy.runtime.auto_precision import measured_here

    speed = backend_speed((Bundle.of(bundle).stage("precision").get(key) or {}).get("speed"), backend)
    return float(speed["speedup"]) if speed and measured_here(speed, machine) else None


def gate_passed(bundle: Bundle, key: str) -> dict[str, Any] | None:
    """The accuracy figures recorded by ``sk-deploy quantize`` under ``stages.precision[key]`` if its gate
    passed, else None."""
    entry = bundle.stage("precision").get(key) or {}
    accuracy = entry.get("accuracy") or {}
    return accuracy if accuracy.get("passed") else None


def faster_tip(bundle: Bundle | dict[str, Any], backend: str, precision: str, machine: Machine) -> str | None:
    """One line naming the flag for a faster precision that has passed its gate in this bundle and runs here
    (a CPU hint such as bf16 where this CPU and its backend run it, else int8 where a graph's gate passed on a CPU
    backend of this machine), when ``precision`` fp32 was picked for the CPU."""
    spec = BACKENDS.get(backend)
    if precision != Precision.FP32 or spec is None or spec.device != "cpu" or machine.cuda:
        return None
    bundle = Bundle.of(bundle)
    for hint in (p for p in PRECISIONS if p.gated and p.hint and p.device == "cpu"):
        try:
            runner = _only_runner(hint, machine)
        except BackendUnavailable:
            continue
        figures = gate_passed(bundle, hint)
        if figures:
            return (f"tip: --precision {hint} runs faster on this CPU ({runner}, native {hint.facts.native_cpu}; its "
                    f"gate passed: mean cosine {figures['cosine_mean']:.5f} against fp32; {RESULTS})")
    for name in (form.file for form in graph_forms(Precision.INT8, "cpu") if bundle.has(form.file)):
        for runner in gated_runners_here(Precision.INT8, machine):
            int8, _ = backend_gate(bundle, name, runner)
            if int8:
                return (f"tip: --precision int8 runs faster on this CPU ({name} on {runner}; its gate passed there: "
                        f"mean cosine {int8['cosine_mean']:.5f} against fp32; {RESULTS})")
    return None
