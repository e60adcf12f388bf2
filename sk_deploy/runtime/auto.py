"""``auto``'s rules for the backends that need more than the machine's packages and devices to be taken: each is
named by its backend's ``auto_rule`` in the table (``sk_deploy.backends``) and takes (bundle, precision,
machine, spec) to a Choice, or raises BackendUnavailable (with why, or an empty message when the backend is simply
not a candidate here). A backend without a rule is taken where the machine has what it needs (``runs_here``).
"""

from __future__ import annotations

from sk_deploy.backends import BackendSpec
from sk_deploy.bundle import Bundle
from sk_deploy.engines.compat import fitting_engine as find_fitting_engine
from sk_deploy.machine import BackendUnavailable, Machine
from sk_deploy.precisions import Precision
from sk_deploy.runtime.cpu_choice import backend_gate, cpu_backend
from sk_deploy.runtime.predictor import Choice, onnx_file


def runs_here(bundle: Bundle, precision: str, machine: Machine, spec: BackendSpec) -> Choice:
    """The rule of a backend without one of its own: taken where the machine has what it needs; a backend that
    runs on either device is taken on a GPU only (on the CPU, the CPU backends after it are faster)."""
    if spec.machine_refusal(machine) or (spec.device == "any" and not machine.cuda):
        raise BackendUnavailable("")
    where = f"{machine.gpu_name}: " if spec.on_gpu(machine) else _on_the_cpu(precision, machine)
    file = onnx_file(bundle, spec.name, precision) if spec.runs == "onnx" else None
    return Choice(spec.name, file, where + spec.about)


def fitting_engine(bundle: Bundle, precision: str, machine: Machine, spec: BackendSpec) -> Choice:
    """A TensorRT engine of the bundle built for this GPU and TensorRT."""
    if not (machine.cuda and machine.tensorrt_version):
        raise BackendUnavailable("")
    engine, why = find_fitting_engine(bundle, precision, machine)
    if engine is None:
        raise BackendUnavailable(why)
    return Choice(spec.name, engine, why)


def _on_the_cpu(precision: str, machine: Machine) -> str:
    """Why ``auto`` comes to the CPU: the start of a CPU rule's reason (none for a CPU-only precision)."""
    if Precision(precision).device == "cpu":
        return ""
    return ("no CUDA GPU here" if not machine.cuda else "no GPU backend can run this") + ": "


def faster_cpu(bundle: Bundle, precision: str, machine: Machine, spec: BackendSpec) -> Choice:
    """Taken where ``cpu_choice`` says it is the CPU backend for ``precision`` of this bundle on this CPU."""
    chosen, why = cpu_backend(bundle, precision, machine)  # a CPU precision nothing here runs: the refusal
    if chosen != spec.name:
        raise BackendUnavailable("")
    return Choice(spec.name, onnx_file(bundle, spec.name, precision), _on_the_cpu(precision, machine) + why)


def cpu_fallback(bundle: Bundle, precision: str, machine: Machine, spec: BackendSpec) -> Choice:
    """ONNX Runtime on the CPU, which ``auto`` falls back to: every precision the CPU computes, a gated one only
    where its gate passed on ONNX Runtime (or passed on no CPU backend: then it was asked for by name)."""
    refusal = Precision(precision).gpu_only_refusal(spec.name)
    if refusal:
        raise BackendUnavailable(refusal if not machine.cuda else "")
    chosen, why = cpu_backend(bundle, precision, machine)
    file = onnx_file(bundle, spec.name, precision)
    if chosen != spec.name:  # another CPU backend was preferred; ONNX Runtime is what auto falls back to
        figures, words = backend_gate(bundle, file, spec.name)
        if Precision(precision).gated and figures is None and backend_gate(bundle, onnx_file(
                bundle, chosen, precision), chosen)[0] is not None:
            raise BackendUnavailable(f"ort-cpu: {file} {words}")
        why = "ONNX Runtime on the CPU, faster than PyTorch eager there"
    return Choice(spec.name, file, _on_the_cpu(precision, machine) + why)
