"""``--precision auto``, the default everywhere a bundle is served: the fastest precision whose accuracy gate has
passed for this bundle and that runs on this machine's backend, and one line saying which, the gate's figures and
the speed-up it buys.

Fastest first: on a CPU int8 (a gated int8 graph in the bundle), then bf16 (its gate measured on this bundle, on a
CPU that computes bfloat16 natively, through OpenVINO), then fp32; on a GPU int8, then fp16, then fp32. A precision
is passed over when the bundle has no gated graph of it, when the machine or the backend cannot run it, or when a
speed-up measured on this very CPU (or GPU) and recorded in the bundle says it is slower than fp32. The speed-up
said is that recorded figure (``runtime.precision_speed``, measured when the gate passed) or none: never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sk_deploy.bundle import Bundle
from sk_deploy.machine import BackendUnavailable, Machine

AUTO = "auto"
#: what ``auto`` tries, fastest first, by where the bundle runs; fp32 (last) needs no gate
CPU_ORDER = ("int8", "bf16", "fp32")
GPU_ORDER = ("int8", "fp16", "fp32")
BF16_KEY = "bf16"  # stages.precision entry of the bf16 gate (the precision pipeline writes it)


@dataclass(frozen=True)
class PrecisionChoice:
    """The precision served, the one line saying why, the gate's figures and the measured speed-up (if any)."""

    precision: str
    reason: str
    accuracy: dict[str, Any] | None = None
    speed: dict[str, Any] | None = None
    passed_over: list[str] = field(default_factory=list)
    """Why each faster precision was not taken, one clause each."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form (served metadata)."""
        return {"precision": self.precision, "reason": self.reason, "accuracy": self.accuracy, "speed": self.speed,
                "passed_over": self.passed_over}


def precision_entry(bundle: Bundle, key: str) -> dict[str, Any]:
    """What the precision stage recorded under ``key`` (a file name, or ``bf16``); empty when nothing."""
    return dict(bundle.stage("precision").get(key) or {})


def measured_here(speed: dict[str, Any] | None, machine: Machine) -> bool:
    """Whether a recorded speed measurement was taken on this machine's processor (the GPU's name on a GPU,
    else the CPU's name and flags)."""
    if not speed or "speedup" not in speed:
        return False
    return speed.get("device") == device_name(machine)


def device_name(machine: Machine) -> str:
    """The processor a speed-up is measured on: the GPU where there is one, else the CPU with its flags."""
    return str(machine.gpu_name) if machine.cuda else machine.cpu.describe()


def speed_words(speed: dict[str, Any] | None, machine: Machine) -> str:
    """``1.32x fp32 at batch 8 (openvino, measured on this CPU when its gate passed)``, or why no figure is said."""
    if not speed:
        return "speed-up not measured for this bundle"
    if "speedup" not in speed:
        return f"speed-up not measured ({speed.get('error', 'no figure')})"
    if not measured_here(speed, machine):
        return f"speed-up not measured on this {'GPU' if machine.cuda else 'CPU'} (measured on {speed.get('device')})"
    return (f"{speed['speedup']:.2f}x fp32 at batch {speed['batch']} ({speed['backend']} {speed['ms']:.1f} ms "
            f"against {speed['fp32_backend']} fp32 {speed['fp32_ms']:.1f} ms, measured on this "
            f"{'GPU' if machine.cuda else 'CPU'} when its gate passed)")


def _gate_words(accuracy: dict[str, Any]) -> str:
    parts = [f"mean cosine {accuracy['cosine_mean']:.5f}"]
    if accuracy.get("top1_agreement") is not None:
        parts.append(f"top-1 agreement {accuracy['top1_agreement']:.1%}")
    return ", ".join(parts) + " against fp32"


def _candidate(bundle: Bundle, backend: str, precision: str, machine: Machine) -> tuple[str, dict[str, Any],
                                                                                        dict[str, Any] | None]:
    """(the gate's key, its accuracy figures, the recorded speed) of ``precision`` if ``auto`` may serve it
    here; a BackendUnavailable saying why not otherwise."""
    from sk_deploy.runtime.predictor import plan

    if precision == "bf16" and not machine.cpu.native_bf16:
        raise BackendUnavailable(f"this CPU has no native bfloat16 ({machine.cpu.describe()})")
    try:
        choice = plan(bundle, backend, precision, machine)
    except BackendUnavailable as exc:
        raise BackendUnavailable(str(exc).split("; make it:")[0]) from None  # the how-to ends the line
    key = BF16_KEY if precision == "bf16" else str(choice.file)
    if choice.file is None or not key.endswith(".onnx"):  # an engine or the network: gated by its ONNX graph
        key = BF16_KEY if precision == "bf16" else _gated_graph(bundle, precision, "gpu" if machine.cuda else "cpu")
    entry = precision_entry(bundle, key)
    accuracy = entry.get("accuracy") or {}
    if not accuracy.get("passed"):
        what = "its gate was not measured on this bundle" if not accuracy else "its gate failed"
        if precision != "bf16" and not accuracy:
            what = f"{key} has no gate recorded"
        raise BackendUnavailable(what)
    speed = entry.get("speed")
    if measured_here(speed, machine) and speed["speedup"] < 1.0:  # type: ignore[index]
        raise BackendUnavailable(f"its gate passed, but {speed_words(speed, machine)}: slower than fp32")
    return key, accuracy, speed


def _gated_graph(bundle: Bundle, precision: str, device: str) -> str:
    """The bundle's ONNX graph of ``precision`` for ``device`` that an engine of it was built from."""
    from sk_deploy.bundle import MissingGraph

    try:
        return bundle.graph(precision, device)
    except MissingGraph as exc:
        raise BackendUnavailable(str(exc).split("; make it:")[0]) from None


def _how_to(precision: str) -> str:
    if precision == "bf16":
        return "sk-deploy quantize BUNDLE --precision bf16"
    return f"sk-deploy quantize BUNDLE --precision {precision} --images DIR"


def choose_precision(bundle: Bundle | dict[str, Any], backend: str, machine: Machine) -> PrecisionChoice:
    """The fastest precision whose gate passed for ``bundle`` and that ``backend`` (a name or ``auto``) runs on
    ``machine``, with its one-line reason."""
    bundle = Bundle.of(bundle)
    order = GPU_ORDER if machine.cuda else CPU_ORDER
    passed_over: list[str] = []
    for precision in order[:-1]:
        try:
            key, accuracy, speed = _candidate(bundle, backend, precision, machine)
        except BackendUnavailable as exc:
            passed_over.append(f"{precision}: {exc}")
            continue
        where = "" if precision == "bf16" else f"{key}: "
        reason = (f"{precision}, the fastest precision whose gate passed for this bundle here ({where}"
                  f"{_gate_words(accuracy)}; {speed_words(speed, machine)}); --precision fp32 pins float32")
        return PrecisionChoice(precision, reason, accuracy, speed if measured_here(speed, machine) else None,
                               passed_over)
    hints = [_how_to(p) for p in order[:-1] if p != "bf16" or machine.cpu.native_bf16]
    reason = (f"fp32: no faster precision passed its gate for this bundle here ({'; '.join(passed_over)}); "
              f"to gate one: {' or '.join(hints)}")
    return PrecisionChoice("fp32", reason, None, None, passed_over)


def resolve_precision(bundle: Bundle | dict[str, Any], backend: str, precision: str,
                      machine: Machine) -> PrecisionChoice:
    """``auto`` chosen by ``choose_precision``; any other precision pinned as asked."""
    if precision == AUTO:
        return choose_precision(bundle, backend, machine)
    return PrecisionChoice(precision, f"{precision}: asked for")
