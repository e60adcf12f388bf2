"""Precision debugging on the CPU: which quantized layers to keep float so that an INT8 graph passes its gate.

What Polygraphy's ``debug precision`` does by bisection against TensorRT, here against the float32 graph, in
few graph evaluations:

1. **One pass of sensitivity.** A probe graph holds the float32 network and, beside each quantized layer, a copy
   that reads the same float32 activations through that layer's own Q/DQ (the calibrated scales). One run over
   the held-out pictures gives every layer's local quantization noise at once: the noise-to-signal ratio of the
   copy's output against the float32 output, in dB (higher: more sensitive).
2. **Bisection over the ranking.** Keeping the k most sensitive layers float is assumed to help more as k grows;
   the smallest k whose graph passes the gate is found by bisection (about log2(layers) + 2 evaluations, where
   trying every layer alone takes one evaluation per layer and still does not say which set passes).
3. **What each exclusion bought.** For a short answer (``EXPLAIN_UP_TO`` layers or fewer) each prefix of it is
   evaluated, so every kept layer gets the figure it moved.

A layer is kept float by undoing its quantization in the Q/DQ graph (its inputs read the float tensors and float
weights again), so the calibration is done once and every candidate graph has the same ranges elsewhere.

Graphs from anywhere: ONNX Runtime's quantizer names a quantized bias's DequantizeLinear output after the float
bias (``onnx::Conv_912`` of torch's legacy exporter), so the Q/DQ graph and the float graph define that name
differently; ``separate`` renames such outputs before the two are mixed. Layers are named for people by
``layer_label``: the PyTorch module path where the weights carry one, the ONNX node name otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from sk_deploy.machine import runtime_threads
from sk_deploy.precision.accuracy import AccuracyReport
from sk_deploy.precision.fp16 import PrecisionError
from sk_deploy.precision.int8 import _name_nodes

EXPLAIN_UP_TO = 6
PROBE = "/sensitivity"


@dataclass
class Exclusion:
    """One layer kept float: its one-pass sensitivity and what keeping it (and those before it) float gave."""

    node: str
    op_type: str
    noise_db: float
    layer: str = ""
    """The name a person knows it by (``layer_label``): a PyTorch module path, or the node name."""
    cosine_after: float | None = None
    """Mean cosine of the graph with this layer and the more sensitive ones kept float (None: not evaluated)."""
    gained: float | None = None
    """``cosine_after`` minus the figure before this layer was kept float."""


@dataclass
class AutoExcludeReport:
    """The search: candidates, evaluations spent, the layers kept float, the final figures."""

    candidates: int
    evaluations: int
    excluded: list[Exclusion] = field(default_factory=list)
    passed: bool = False
    start: dict[str, Any] = field(default_factory=dict)
    final: dict[str, Any] = field(default_factory=dict)
    most_sensitive: list[dict[str, Any]] = field(default_factory=list)
    """The ten most sensitive layers, for the record."""
    why: str = ""
    """When the search cannot pass the gate: why, in one line."""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form for the manifest."""
        return {
            "candidates": self.candidates, "evaluations": self.evaluations,
            "every_layer_evaluations": self.candidates, "passed": self.passed,
            "excluded": [vars(e) for e in self.excluded], "start": self.start, "final": self.final,
            "most_sensitive": self.most_sensitive, "why": self.why,
        }


def _producers(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in model.graph.node for o in n.output}


def quantized_layers(qdq: onnx.ModelProto) -> list[str]:
    """Nodes of a Q/DQ graph (other than Q/DQ) that read at least one DequantizeLinear output, in graph order."""
    producers = _producers(qdq)
    return [
        n.name for n in qdq.graph.node
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
        and any(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in n.input)
    ]


def layer_label(model: onnx.ModelProto, node: onnx.NodeProto) -> str:
    """The name a person knows ``node`` by: the PyTorch module path its weight carries (``layer1.0.conv1.conv``,
    the name torch's dynamo exporter keeps for a parameter), else the ONNX node name (legacy-exported weights are
    called ``onnx::Conv_911``)."""
    weights = {t.name for t in model.graph.initializer}
    for name in node.input[1:2]:
        if name in weights and name.endswith(".weight") and not name.startswith("onnx::"):
            return name.removesuffix(".weight")
    return node.name


def separate(qdq: onnx.ModelProto, float_model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``qdq`` in which no Q/DQ node's output has the name of a float graph initializer.

    ONNX Runtime's quantizer names a quantized bias's DequantizeLinear output after the float bias itself; a
    graph that mixes the two (the probe, a layer kept float) would define that name twice. Such outputs become
    ``<name>_dequantized`` (made unique), in their consumers too.
    """
    model = onnx.ModelProto.FromString(qdq.SerializeToString())
    graph = model.graph
    floats = {t.name for t in float_model.graph.initializer}
    taken = {t.name for t in graph.initializer} | {o for n in graph.node for o in n.output} | floats
    renamed: dict[str, str] = {}
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for i, output in enumerate(node.output):
            if output in floats:
                new = f"{output}_dequantized"
                while new in taken:
                    new += "_"
                taken.add(new)
                renamed[output] = node.output[i] = new
    if renamed:
        for node in graph.node:
            node.input[:] = [renamed.get(name, name) for name in node.input]
        for output in graph.output:
            output.name = renamed.get(output.name, output.name)
    return model


def _named(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy with every node named as ``int8.quantize_int8`` names them (the Q/DQ graph keeps those names)."""
    copy = onnx.ModelProto.FromString(model.SerializeToString())
    _name_nodes(copy)
    return copy


def _prune(model: onnx.ModelProto) -> None:
    """Drop nodes and initializers that nothing reads any more (the Q/DQ of a layer kept float)."""
    graph = model.graph
    needed = {o.name for o in graph.output}
    kept: list[onnx.NodeProto] = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    del graph.node[:]
    graph.node.extend(reversed(kept))
    inits = [t for t in graph.initializer if t.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(inits)


def keep_float(qdq: onnx.ModelProto, float_model: onnx.ModelProto, layers: Iterable[str]) -> onnx.ModelProto:
    """A copy of ``qdq`` whose ``layers`` read float inputs and float weights again (their Q/DQ undone)."""
    model = separate(qdq, float_model)
    original = {n.name: n for n in _named(float_model).graph.node}
    float_inits = {t.name: t for t in float_model.graph.initializer}
    present = {t.name for t in model.graph.initializer}
    nodes = {n.name: n for n in model.graph.node}
    for name in layers:
        if name not in nodes or name not in original:
            raise PrecisionError(f"no quantized layer named {name!r}")
        nodes[name].input[:] = original[name].input
        for tensor in original[name].input:
            if tensor in float_inits and tensor not in present:
                model.graph.initializer.append(float_inits[tensor])
                present.add(tensor)
    _prune(model)
    return model


def probe_graph(qdq: onnx.ModelProto, float_model: onnx.ModelProto, layers: Sequence[str]) -> onnx.ModelProto:
    """The float32 network plus, for each of ``layers``, a copy fed through its own Q/DQ from float activations.

    Outputs: for each layer, its float32 output and the copy's (named ``<output><PROBE>``).
    """
    qdq = separate(qdq, float_model)
    probe = _named(float_model)
    qnodes = {n.name: n for n in qdq.graph.node}
    producers = _producers(qdq)
    qdq_inits = {t.name: t for t in qdq.graph.initializer}
    present = {t.name for t in probe.graph.initializer}
    added: set[str] = set()

    def bring(tensor: str) -> None:
        """Add the Q/DQ chain that produces ``tensor`` in the Q/DQ graph (and its initializers)."""
        if tensor in qdq_inits and tensor not in present:
            probe.graph.initializer.append(qdq_inits[tensor])
            present.add(tensor)
        node = producers.get(tensor)
        if node is None or node.op_type not in ("QuantizeLinear", "DequantizeLinear") or node.name in added:
            return
        added.add(node.name)
        for name in node.input:
            if name:
                bring(name)
        probe.graph.node.append(node)

    floats = {n.name: n for n in probe.graph.node}
    outputs = []
    for name in layers:
        layer = qnodes[name]
        for tensor in layer.input:
            if tensor:
                bring(tensor)
        # the float network's names: the quantizer renames a layer's output when it is a graph output
        reference = floats[name].output if name in floats else layer.output
        copy = onnx.NodeProto()
        copy.CopyFrom(layer)
        copy.name = name + PROBE
        copy.output[:] = [o + PROBE for o in reference]
        probe.graph.node.append(copy)
        outputs.append(reference[0])
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for o in outputs for n in (o, o + PROBE))
    return probe


def layer_sensitivity(
    qdq: onnx.ModelProto, float_model: onnx.ModelProto, layers: Sequence[str], inputs: np.ndarray, chunk: int = 2
) -> dict[str, float]:
    """Each layer's local quantization noise-to-signal ratio (dB) over ``inputs``, from one probe pass."""
    import onnxruntime as ort

    probe = probe_graph(qdq, float_model, layers)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = runtime_threads()
    try:
        session = ort.InferenceSession(probe.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own unrelated types; the user gets one line
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        raise PrecisionError(f"--auto-exclude: the layer-sensitivity probe graph does not load in ONNX Runtime "
                             f"({first})") from None
    feed = session.get_inputs()[0].name
    signal = np.zeros(len(layers))
    noise = np.zeros(len(layers))
    for start in range(0, len(inputs), chunk):
        values = session.run(None, {feed: inputs[start:start + chunk]})
        for i in range(len(layers)):
            reference, quantized = values[2 * i].astype(np.float64), values[2 * i + 1].astype(np.float64)
            signal[i] += float((reference**2).sum())
            noise[i] += float(((quantized - reference) ** 2).sum())
    ratio = 10 * np.log10(np.maximum(noise, 1e-30) / np.maximum(signal, 1e-30))
    return dict(zip(layers, ratio.tolist(), strict=True))


def _figures(report: AccuracyReport) -> dict[str, Any]:
    return {**report.agreement.to_dict(), "passed": report.passed, "failures": report.failures}


def auto_exclude(
    qdq: onnx.ModelProto,
    float_model: onnx.ModelProto,
    inputs: np.ndarray,
    evaluate: Callable[[onnx.ModelProto], AccuracyReport],
    finish: Callable[[onnx.ModelProto], onnx.ModelProto] = lambda m: m,
    start: AccuracyReport | None = None,
) -> tuple[onnx.ModelProto, AccuracyReport, AutoExcludeReport]:
    """Keep the fewest most sensitive quantized layers of ``qdq`` float until ``evaluate`` passes.

    ``finish`` turns a Q/DQ graph into the graph that is judged (the float16 conversion of the TensorRT form);
    ``start``, when given, is the judgement of the graph with nothing kept float (saves one evaluation).
    Returns the chosen graph (finished), its judgement and the report of the search.
    """
    layers = quantized_layers(qdq)
    if not layers:
        raise PrecisionError("--auto-exclude: the graph has no quantized layer")
    noise = layer_sensitivity(qdq, float_model, layers, inputs)
    ranked = sorted(layers, key=lambda n: -noise[n])
    op_types = {n.name: n.op_type for n in qdq.graph.node}
    labels = {n.name: layer_label(float_model, n) for n in _named(float_model).graph.node}
    results: dict[int, tuple[onnx.ModelProto, AccuracyReport]] = {}
    evaluations = int(start is not None)  # the caller judged the graph with nothing kept float

    def judge(k: int) -> AccuracyReport:
        nonlocal evaluations
        if k not in results:
            model = finish(keep_float(qdq, float_model, ranked[:k]))
            results[k] = (model, evaluate(model))
            evaluations += 1
        return results[k][1]

    if start is not None:
        results[0] = (finish(qdq), start)
    report = AutoExcludeReport(candidates=len(layers), evaluations=0, start=_figures(judge(0)),
                               most_sensitive=[{"node": n, "layer": labels.get(n, n), "op_type": op_types[n],
                                                "noise_db": round(noise[n], 2)} for n in ranked[:10]])
    if judge(0).passed:
        k = 0
    elif not judge(len(ranked)).passed:
        k = len(ranked)
    else:
        low, high = 0, len(ranked)
        while high - low > 1:
            mid = (low + high) // 2
            if judge(mid).passed:
                high = mid
            else:
                low = mid
        k = high
    if 0 < k <= EXPLAIN_UP_TO:
        for j in range(1, k):
            judge(j)
    previous = judge(0).agreement.cosine_mean
    for j, name in enumerate(ranked[:k], start=1):
        exclusion = Exclusion(name, op_types[name], round(noise[name], 2), labels.get(name, name))
        if j in results:
            exclusion.cosine_after = round(results[j][1].agreement.cosine_mean, 6)
            exclusion.gained = round(results[j][1].agreement.cosine_mean - previous, 6)
            previous = results[j][1].agreement.cosine_mean
        report.excluded.append(exclusion)
    model, final = results[k]
    report.evaluations = evaluations
    report.passed = final.passed
    report.final = _figures(final)
    if not final.passed:
        report.why = (f"even with all {len(ranked)} quantized layers kept float the graph misses its gate "
                      f"({'; '.join(final.failures)}): the loss is not in the quantized layers")
    return model, final, report


def search_exclusions(
    qdq: onnx.ModelProto, float_model: onnx.ModelProto, inputs: np.ndarray, out: Path,
    judge: Callable[[np.ndarray], AccuracyReport], high_precision: str, exclude: Iterable[str],
    start: AccuracyReport, probe_images: int = 8,
) -> tuple[AccuracyReport, dict[str, Any]]:
    """``auto_exclude`` as ``sk-deploy quantize --auto-exclude`` runs it: every candidate graph is written to
    ``out`` and judged on ``inputs`` by ``judge(logits)``; the chosen one is left at ``out``.

    Returns the chosen graph's judgement and the search's manifest record.
    """
    from sk_deploy.precision.mixed import to_mixed
    from sk_deploy.runners import ort_logits

    exclude = tuple(exclude)

    def evaluate(model: onnx.ModelProto) -> AccuracyReport:
        onnx.save_model(model, out)
        return judge(ort_logits(out, lambda dtype: inputs))

    model, final, report = auto_exclude(
        qdq, float_model, inputs[:probe_images], evaluate,
        finish=lambda graph: to_mixed(graph, high_precision, exclude)[0], start=start,
    )
    onnx.save_model(model, out)
    return final, report.to_dict()


def describe_search(record: dict[str, Any]) -> list[str]:
    """The search's record (``AutoExcludeReport.to_dict``) as lines for a person."""
    start, final = record["start"], record["final"]
    lines = [f"--auto-exclude: {len(record['excluded'])} of {record['candidates']} quantized layers kept float, "
             f"{record['evaluations']} graph evaluations "
             f"(trying every layer alone: {record['every_layer_evaluations']})"]
    for e in record["excluded"]:
        bought = (f"cosine {e['cosine_after']:.5f} ({e['gained']:+.5f})" if e["cosine_after"] is not None
                  else "not evaluated alone")
        node = f"{e['op_type']} {e['node']}" if e.get("layer", e["node"]) != e["node"] else e["op_type"]
        lines.append(f"  {e.get('layer') or e['node']} ({node}): local noise {e['noise_db']:.1f} dB, {bought}")
    verdict = "passes" if record["passed"] else f"still misses the gate: {record.get('why') or 'see above'}"
    lines.append(f"  mean cosine {start['cosine_mean']:.5f} -> {final['cosine_mean']:.5f}, top-1 "
                 f"{start['top1_agreement']:.1%} -> {final['top1_agreement']:.1%}: {verdict}")
    return lines
