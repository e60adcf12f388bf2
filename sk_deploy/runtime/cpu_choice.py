"""Which CPU backend ``auto`` picks for a precision, from what this machine has, and the one-line tip when a
faster precision has passed its gate in the bundle.

The rules follow benchmarks/results/cpu-2core/openvino.md (SKNet-50 at 224, one run, interleaved rounds):
on an AVX-512 CPU OpenVINO beats ONNX Runtime at every precision it runs (fp32 pinned to f32 included), bf16
runs only on OpenVINO and only where the CPU computes bfloat16 natively, and OpenVINO runs the bundle's int8
graph faster than ONNX Runtime runs its CPU form. Where OpenVINO is not installed, or on a CPU without AVX-512
(fp32) or int8 dot products (int8), where that lead was not measured, ONNX Runtime stays the CPU backend.
"""

from __future__ import annotations

from typing import Any

from sk_deploy.backends import BACKENDS, runners_of
from sk_deploy.bundle import Bundle
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


def cpu_backend(precision: str, machine: Machine) -> tuple[str, str]:
    """(backend, why) for ``precision`` on this machine's CPU; a BackendUnavailable where nothing runs it."""
    cpu = machine.cpu
    flags = ", ".join(cpu.reported()) or "no AVX-512/VNNI/AMX flags"
    only = _only_runner(Precision(precision), machine)
    if only is not None:
        native = Precision(precision).facts.native_cpu
        return only, (f"{precision} runs on {only} only" +
                      (f", and this CPU computes {native} natively ({flags})" if native else ""))
    missing = BACKENDS["openvino"].machine_refusal(machine)
    if missing:
        return "ort-cpu", (f"ONNX Runtime on the CPU, faster than PyTorch eager there (OpenVINO, faster still on "
                           f"AVX-512 CPUs: {missing})")
    if precision == Precision.INT8 and cpu.int8_dot:
        return "openvino", (f"OpenVINO {machine.openvino_version} runs the bundle's int8 graph faster than ONNX "
                            f"Runtime on this CPU ({flags}; {RESULTS})")
    if precision == Precision.FP32 and "avx512f" in cpu.flags:
        return "openvino", (f"OpenVINO {machine.openvino_version} with f32 pinned is faster than ONNX Runtime on "
                            f"AVX-512 CPUs ({flags}; {RESULTS})")
    lacks = "int8 dot products (VNNI, AMX)" if precision == Precision.INT8 else "AVX-512"
    return "ort-cpu", (f"ONNX Runtime on the CPU: this CPU has no {lacks} ({flags}), where OpenVINO's lead was not "
                       "measured")


def gate_passed(bundle: Bundle, key: str) -> dict[str, Any] | None:
    """The accuracy figures recorded by ``sk-deploy quantize`` under ``stages.precision[key]`` if its gate
    passed, else None."""
    entry = bundle.stage("precision").get(key) or {}
    accuracy = entry.get("accuracy") or {}
    return accuracy if accuracy.get("passed") else None


def faster_tip(bundle: Bundle | dict[str, Any], backend: str, precision: str, machine: Machine) -> str | None:
    """One line naming the flag for a faster precision that has passed its gate in this bundle and runs here
    (a CPU hint such as bf16 where this CPU and its backend run it, else int8), when ``precision`` fp32 was
    picked for the CPU."""
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
    for name in ("model.int8.onnx", "model.int8-cpu.onnx"):
        if bundle.has(name):
            int8 = gate_passed(bundle, name)
            if int8:
                return (f"tip: --precision int8 runs faster on this CPU ({name}; its gate passed: mean cosine "
                        f"{int8['cosine_mean']:.5f} against fp32; {RESULTS})")
    return None
