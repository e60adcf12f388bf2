"""``--precision auto``, the default everywhere a bundle is served: the fastest precision whose accuracy gate has
passed for this bundle and that runs on this machine's backend, and one line saying which, the gate's figures and
the speed-up it buys.

Fastest first: on a CPU int8 (a gated int8 graph in the bundle), then bf16 (its gate measured on this bundle, on a
CPU that computes bfloat16 natively, through OpenVINO), then fp32; on a GPU int8, then fp16, then fp32. The backend
for a precision is ``plan``'s (on the CPU ``runtime.cpu_choice``: a backend where its gate passed on this bundle,
the fastest measured here among them). A precision is passed over when the bundle has no gated graph of it, when
its gate did not pass on the backend that would serve it (``sk-deploy quantize`` judges each graph on every CPU
backend serving it; a GPU backend is held to the graph's own gate), when the machine or the backend cannot run it,
or when a speed-up measured on this very CPU (or GPU) and recorded in the bundle says it is slower than fp32 there.
The speed-up said is that recorded figure (``runtime.precision_speed``, measured when the gate passed) or none:
never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sk_deploy.bundle import Bundle
from sk_deploy.machine import BackendUnavailable, Machine
from sk_deploy.runtime.cpu_choice import backend_gate, backend_speed

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
    """Whether one backend's recorded speed measurement (``cpu_choice.backend_speed``) was taken on this
    machine's processor (the GPU's name on a GPU, else the CPU's name and flags)."""
    if not speed or "speedup" not in speed:
        return False
    return speed.get("device") == device_name(machine)


def device_name(machine: Machine) -> str:
    """The processor a speed-up is measured on: the GPU where there is one, else the CPU with its flags."""
    return str(machine.gpu_name) if machine.cuda else machine.cpu.describe()


def speed_words(recorded: dict[str, Any] | None, backend: str, machine: Machine) -> str:
    """``1.32x fp32 at batch 8 (openvino 12.0 ms against ort-cpu fp32 15.8 ms, measured on this CPU when its gate
    passed)`` from the ``speed`` recorded for a graph, for ``backend``; or why no figure is said."""
    if not recorded:
        return "speed-up not measured for this bundle"
    speed = backend_speed(recorded, backend)
    if speed is None:
        return f"speed-up not measured on {backend} ({recorded.get('error', 'not timed there')})"
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
                                                                                        dict[str, Any] | None, Any]:
    """(the gate's key, its accuracy figures on the backend that serves it, the speed recorded for it, the plan)
    of ``precision`` if ``auto`` may serve it here; a BackendUnavailable saying why not otherwise."""
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
    if not entry.get("accuracy"):
        raise BackendUnavailable("its gate was not measured on this bundle" if precision == "bf16"
                                 else f"{key} has no gate recorded")
    accuracy, words = backend_gate(bundle, key, choice.backend)
    if accuracy is None:
        raise BackendUnavailable(f"{words}, which would serve it" if precision == "bf16" else f"{key} {words}, "
                                 "which would serve it")
    speed = backend_speed(entry.get("speed"), choice.backend)
    if measured_here(speed, machine) and speed["speedup"] < 1.0:  # type: ignore[index]
        raise BackendUnavailable(f"its gate passed, but {speed_words(entry.get('speed'), choice.backend, machine)}:"
                                 " slower than fp32")
    return key, accuracy, entry.get("speed"), choice


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
            key, accuracy, recorded, choice = _candidate(bundle, backend, precision, machine)
        except BackendUnavailable as exc:
            passed_over.append(f"{precision}: {exc}")
            continue
        where = "" if precision == "bf16" else f"{key}: "
        speed = backend_speed(recorded, choice.backend)
        reason = (f"{precision}, the fastest precision whose gate passed for this bundle here ({where}"
                  f"{_gate_words(accuracy)} on {choice.backend}; {speed_words(recorded, choice.backend, machine)}); "
                  f"served on {choice.backend}: {choice.reason}; --precision fp32 pins float32")
        return PrecisionChoice(precision, reason, accuracy, speed if measured_here(speed, machine) else None,
                               passed_over)
    hints = [_how_to(p) for p in order[:-1] if p != "bf16" or machine.cpu.native_bf16]
    reason = (f"fp32: no faster precision passed its gate for this bundle here ({'; '.join(passed_over)}); "
              f"to gate one: {' or '.join(hints)}")
    return PrecisionChoice("fp32", reason, None, None, passed_over)


def resolve_precision(bundle: Bundle | dict[str, Any], backend: str, precision: str,
                      machine: Machine) -> PrecisionChoice:
    """``auto`` chosen by ``choose_precision``; any other precision pinned as asked (on a CPU backend asked for by
    name where that precision's gate did not pass on this bundle, served all the same, the line says so)."""
    if precision == AUTO:
        return choose_precision(bundle, backend, machine)
    return PrecisionChoice(precision, f"{precision}: asked for{_ungated(Bundle.of(bundle), backend, precision)}")


def _ungated(bundle: Bundle, backend: str, precision: str) -> str:
    """``; warning: model.int8.onnx its gate failed on openvino (...)`` where ``backend`` (a CPU backend quantize
    judges on) serves a gated graph whose gate did not pass there; empty otherwise."""
    from sk_deploy.backends import gated_backends
    from sk_deploy.precisions import PRECISIONS, Precision
    from sk_deploy.runtime.predictor import onnx_file

    if backend not in gated_backends() or precision not in PRECISIONS or not Precision(precision).gated:
        return ""
    try:
        key = BF16_KEY if Precision(precision).hint else onnx_file(bundle, backend, precision)
    except BackendUnavailable:
        return ""  # no such graph: opening it says so
    figures, words = backend_gate(bundle, key, backend)
    return "" if figures is not None else f"; warning: {'' if key == BF16_KEY else key + ' '}{words}"
