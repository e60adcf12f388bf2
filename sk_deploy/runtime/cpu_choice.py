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

from sk_deploy.bundle import Bundle
from sk_deploy.machine import OPENVINO_INSTALL, BackendUnavailable, Machine, bf16_refusal

RESULTS = "benchmarks/results/cpu-2core/openvino.md"


def cpu_backend(precision: str, machine: Machine) -> tuple[str, str]:
    """(backend, why) for ``precision`` on this machine's CPU; a BackendUnavailable where nothing runs it."""
    cpu = machine.cpu
    flags = ", ".join(cpu.reported()) or "no AVX-512/VNNI/AMX flags"
    if precision == "bf16":
        if machine.openvino_version is None:
            raise BackendUnavailable(f"bf16 runs on the openvino backend, and OpenVINO is not installed: "
                                     f"{OPENVINO_INSTALL}")
        refusal = bf16_refusal(cpu)
        if refusal:
            raise BackendUnavailable(refusal)
        return "openvino", f"bf16 runs on OpenVINO, and this CPU computes bfloat16 natively ({flags})"
    if machine.openvino_version is None:
        return "ort-cpu", (f"ONNX Runtime on the CPU, faster than PyTorch eager there (OpenVINO, faster still on "
                           f"AVX-512 CPUs, is not installed: {OPENVINO_INSTALL})")
    if precision == "int8" and cpu.int8_dot:
        return "openvino", (f"OpenVINO {machine.openvino_version} runs the bundle's int8 graph faster than ONNX "
                            f"Runtime on this CPU ({flags}; {RESULTS})")
    if precision == "fp32" and "avx512f" in cpu.flags:
        return "openvino", (f"OpenVINO {machine.openvino_version} with f32 pinned is faster than ONNX Runtime on "
                            f"AVX-512 CPUs ({flags}; {RESULTS})")
    lacks = "int8 dot products (VNNI, AMX)" if precision == "int8" else "AVX-512"
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
    (bf16 on a native-bf16 CPU with OpenVINO, else int8), when ``precision`` fp32 was picked for the CPU."""
    if precision != "fp32" or backend not in ("ort-cpu", "openvino") or machine.cuda:
        return None
    bundle = Bundle.of(bundle)
    if machine.openvino_version and bf16_refusal(machine.cpu) is None:
        bf16 = gate_passed(bundle, "bf16")
        if bf16:
            return (f"tip: --precision bf16 runs faster on this CPU (OpenVINO, native bfloat16; its gate passed: "
                    f"mean cosine {bf16['cosine_mean']:.5f} against fp32; {RESULTS})")
    for name in ("model.int8.onnx", "model.int8-cpu.onnx"):
        if bundle.has(name):
            int8 = gate_passed(bundle, name)
            if int8:
                return (f"tip: --precision int8 runs faster on this CPU ({name}; its gate passed: mean cosine "
                        f"{int8['cosine_mean']:.5f} against fp32; {RESULTS})")
    return None
