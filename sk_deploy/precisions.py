"""The one precision type: every precision sk-deploy runs, with the facts the stages ask of it instead of testing
its name.

- ``fp32``, ``fp16``, ``int8``: baked into a graph file of the bundle (``bundle.GRAPH_FORMS`` says which file).
- ``bf16``: a compile-time hint on the float32 graph (OpenVINO's inference precision), only on a CPU that computes
  bfloat16 natively (emulated bf16 is slower than float32); ``sk-deploy quantize`` gates it with no file of its own.
- ``tf32``: TensorFloat-32 arithmetic on the float32 graph, a run-time setting of NVIDIA GPUs only.

Which backend runs which precision is the backend table's (``sk_deploy.backends``).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from sk_deploy.machine import BF16_FLAGS, CpuFeatures


@dataclass(frozen=True)
class PrecisionFacts:
    """What a precision is: ``graph`` the precision of the graph file it runs (itself where it is baked into one),
    ``hint`` whether it is set when the graph is compiled or run rather than written into a file, ``device`` the
    one device that computes it (None: every one), ``native_cpu`` the CPU's native support it needs (None:
    none), ``gated`` whether ``sk-deploy quantize`` makes it and holds it to an accuracy gate, ``about`` a few
    words for help texts."""

    graph: str
    hint: bool = False
    device: str | None = None
    native_cpu: str | None = None
    gated: bool = False
    about: str = ""


class Precision(StrEnum):
    """A precision by name (a ``str``: ``Precision("bf16") == "bf16"``), with its facts as properties."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"
    BF16 = "bf16"
    TF32 = "tf32"

    @property
    def facts(self) -> PrecisionFacts:
        """This precision's entry of FACTS."""
        return FACTS[self]

    @property
    def graph(self) -> Precision:
        """The precision of the graph file it runs: itself, or fp32 for the hints (bf16, tf32)."""
        return Precision(self.facts.graph)

    @property
    def hint(self) -> bool:
        """Set when the graph is compiled or run (bf16, tf32), not baked into a graph file of its own."""
        return self.facts.hint

    @property
    def device(self) -> str | None:
        """The one device (cpu or gpu) that computes it; None for every device."""
        return self.facts.device

    @property
    def gated(self) -> bool:
        """Made by ``sk-deploy quantize`` and held to an accuracy gate before it is served by default."""
        return self.facts.gated

    @property
    def has_file(self) -> bool:
        """Whether the bundle holds a graph file of its own for it (a gated hint records its figures only)."""
        return not self.hint

    def gpu_only_refusal(self, where: str) -> str | None:
        """The one line refusing a GPU-only precision on ``where`` (a CPU backend), None where it runs there."""
        if self.device != "gpu":
            return None
        return f"{self} is {self.facts.about}; {where} runs on the CPU: ask for {self.graph}"

    def cpu_refusal(self, cpu: CpuFeatures) -> str | None:
        """Why ``cpu`` cannot compute this precision (one line: GPU-only, or the native support it lacks), None
        when it can."""
        if self.device == "gpu":
            return self.gpu_only_refusal("the CPU")
        if self.facts.native_cpu == "bfloat16" and not cpu.native_bf16:
            return (f"{self} needs a CPU with native bfloat16 ({' or '.join(BF16_FLAGS)}); this one has none "
                    f"({cpu.describe()}): use --precision fp32, or int8 where the bundle has it")
        return None


#: Every precision's facts, in the order they are listed to a user.
FACTS: dict[Precision, PrecisionFacts] = {
    Precision.FP32: PrecisionFacts("fp32", about="the exported float32 graph"),
    Precision.FP16: PrecisionFacts("fp16", gated=True, about="the float16 graph"),
    Precision.INT8: PrecisionFacts("int8", gated=True, about="the int8 Q/DQ graph"),
    Precision.BF16: PrecisionFacts("fp32", hint=True, device="cpu", native_cpu="bfloat16", gated=True,
                                   about="the float32 graph compiled in bfloat16 (OpenVINO, on a CPU with native "
                                         "bfloat16)"),
    Precision.TF32: PrecisionFacts("fp32", hint=True, device="gpu",
                                   about="the float32 graph in TensorFloat-32 arithmetic of NVIDIA GPUs"),
}
PRECISIONS: tuple[Precision, ...] = tuple(Precision)


def precision_names(where: str | None = None, gated: bool | None = None) -> tuple[str, ...]:
    """The precisions computed on ``where`` (cpu or gpu; None: any) and, if ``gated`` is given, those that
    ``sk-deploy quantize`` makes (True) or not (False)."""
    return tuple(str(p) for p in PRECISIONS
                 if (where is None or p.device in (None, where)) and (gated is None or p.gated == gated))


def parse_precision(name: str) -> Precision:
    """``name`` as a Precision; an unknown one is a ValueError naming the known ones."""
    try:
        return Precision(name)
    except ValueError:
        raise ValueError(f"unknown precision {name!r}; choose one of: {', '.join(PRECISIONS)}") from None
