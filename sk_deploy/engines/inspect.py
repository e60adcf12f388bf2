"""What precision a TensorRT engine really runs in, read from its engine inspector, not trusted from the request.

``IEngineInspector.get_engine_information(LayerInformationFormat.JSON)`` on an engine built with
``ProfilingVerbosity.DETAILED`` gives one object per fused layer: ``Name``, ``LayerType``, ``Inputs`` and
``Outputs`` (each with ``Dimensions`` and its type: TensorRT 10 writes one ``Format/Datatype`` string such as
``"Channel major FP16 format where channel % 8 == 0"``, TensorRT 11 splits it into ``Format`` and ``DataType``),
and for layers with weights ``Weights: {"Type": "Int8", "Count": N}``. A layer's precision is the lowest type it
reads, writes or multiplies by (a convolution reading int8 and writing float16 after a fused DequantizeLinear
is an INT8 layer). Its compute is weights x output positions for layers with weights, output elements for the
rest (per picture; a dynamic batch dimension is left out).

A build asked for FP16 or INT8 whose engine has no layer of that type is refused (TensorRT 11 has no precision
flags: a graph that lost its types builds silently in FP32).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

#: TensorRT's own layer precisions, as an engine's inspector names them (not sk-deploy's precisions)
LAYER_PRECISIONS = ("INT8", "FP8", "FP16", "BF16", "FP32")
_RANK = {p: i for i, p in enumerate(LAYER_PRECISIONS)}
# TensorRT 11 DataType names and the words of TensorRT 10's format strings, to one precision name each
_TYPE_WORDS = {
    "int8": "INT8", "fp8": "FP8", "half": "FP16", "fp16": "FP16", "bfloat16": "BF16", "bf16": "BF16",
    "float": "FP32", "fp32": "FP32",
}
WANTED = {"fp16": "FP16", "int8": "INT8"}


class InspectionError(RuntimeError):
    """An engine whose precision cannot be read or is not what was asked; the message is meant for a person."""


@dataclass
class PrecisionSummary:
    """Shares of an engine's layers and compute by precision."""

    layers: int
    counts: dict[str, int]
    layer_share: dict[str, float]
    compute_share: dict[str, float]
    unknown_layers: int = 0
    """Layers with no typed tensor (shape or no-op layers): not in the shares."""
    float32_layers: list[str] = field(default_factory=list)
    """The largest FP32 layers by compute (ten at most)."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form for the manifest."""
        return asdict(self)

    def line(self) -> str:
        """One line for a person: layer and compute shares of each precision present."""
        parts = [f"{p} {self.layer_share[p]:.0%} of layers / {self.compute_share[p]:.0%} of compute"
                 for p in LAYER_PRECISIONS if self.counts.get(p)]
        return f"{self.layers} layers: " + ", ".join(parts or ["no typed layer"])


def type_of(entry: dict[str, Any]) -> str | None:
    """The precision of one input/output entry of a layer (TensorRT 10 or 11 form), or None."""
    text = entry.get("DataType") or entry.get("Format/Datatype") or ""
    for word in re.findall(r"[A-Za-z0-9]+", str(text)):
        if (found := _TYPE_WORDS.get(word.lower())) is not None:
            return found
    return None


def layer_precision(layer: dict[str, Any]) -> str | None:
    """The lowest precision a layer reads, writes or multiplies by; None when nothing in it is typed."""
    types = [type_of(t) for t in [*layer.get("Inputs", []), *layer.get("Outputs", [])]]
    weights = layer.get("Weights")
    if isinstance(weights, dict) and weights.get("Count"):
        types.append(_TYPE_WORDS.get(str(weights.get("Type", "")).lower()))
    known = [t for t in types if t is not None]
    return min(known, key=_RANK.__getitem__) if known else None


def _per_picture(dims: list[Any]) -> list[int]:
    """Dimensions without the batch axis, unknown sizes as 1."""
    return [int(d) if isinstance(d, int) and d > 0 else 1 for d in dims[1:]]


def layer_compute(layer: dict[str, Any]) -> float:
    """Multiply-accumulates (layers with weights) or output elements (the rest), per picture."""
    outputs = layer.get("Outputs") or [{}]
    dims = _per_picture(list(outputs[0].get("Dimensions", [])))
    weights = layer.get("Weights")
    count = weights.get("Count", 0) if isinstance(weights, dict) else 0
    if count:
        positions = math.prod(dims[1:]) if len(dims) >= 2 else 1
        return float(count) * positions
    return float(math.prod(dims)) if dims else 0.0


def summarize(information: str | dict[str, Any]) -> PrecisionSummary:
    """The precision shares of an engine from its inspector JSON (a string or the parsed object)."""
    data = json.loads(information) if isinstance(information, str) else information
    layers = data.get("Layers") if isinstance(data, dict) else None
    if not isinstance(layers, list):
        raise InspectionError("the engine inspector's answer has no \"Layers\" list")
    if layers and not all(isinstance(layer, dict) for layer in layers):
        raise InspectionError("the engine carries layer names only: build it with ProfilingVerbosity.DETAILED "
                              "to read its precision")
    counts = {p: 0 for p in LAYER_PRECISIONS}
    compute = {p: 0.0 for p in LAYER_PRECISIONS}
    fp32: list[tuple[float, str]] = []
    unknown = 0
    for layer in layers:
        precision = layer_precision(layer)
        if precision is None:
            unknown += 1
            continue
        counts[precision] += 1
        work = layer_compute(layer)
        compute[precision] += work
        if precision == "FP32":
            fp32.append((work, str(layer.get("Name", "?"))))
    typed = sum(counts.values())
    total = sum(compute.values())
    return PrecisionSummary(
        layers=len(layers),
        counts={p: n for p, n in counts.items() if n},
        layer_share={p: round(counts[p] / typed, 4) if typed else 0.0 for p in LAYER_PRECISIONS},
        compute_share={p: round(compute[p] / total, 4) if total else 0.0 for p in LAYER_PRECISIONS},
        unknown_layers=unknown,
        float32_layers=[name for _, name in sorted(fp32, reverse=True)[:10]],
    )


def check_requested(summary: PrecisionSummary, precision: str, source: str = "the graph") -> None:
    """Refuse an engine asked for ``fp16`` or ``int8`` that has no layer in that type (fp32: nothing to check)."""
    wanted = WANTED.get(precision)
    if wanted is None or summary.counts.get(wanted):
        return
    raise InspectionError(
        f"the {precision} engine built from {source} has no {wanted} layer ({summary.line()}); TensorRT "
        f"built it in the types the graph gives, so the graph has lost its {precision} part: the engine was "
        "not written"
    )
