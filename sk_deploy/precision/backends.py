"""Every backend that can run a bundle here, against the float32 graph on the same pictures (like
``polygraphy run --trt --onnxrt``): each backend the table marks for ``verify`` at every precision it serves of the
bundle (ONNX Runtime CPU on each ONNX file, OpenVINO on each graph it serves, bf16 included: the float32 graph
compiled in bf16 where the CPU has it natively; ONNX Runtime CUDA where its provider and a GPU are there; each
TensorRT engine built for this GPU and TensorRT). Each pair gets its precision's gate (``accuracy.GATES``; fp32 on
another backend: ``FP32_GATE``, which leaves room for TF32 on GPUs).

``gate_on_backends`` is ``sk-deploy quantize``'s half of this: a new graph judged on every CPU backend of the table
that serves it here, each figure recorded under ``stages.precision[file].backends[backend]``, which licenses
``--precision auto`` to serve it there (``runtime.cpu_choice``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sk_deploy.backends import BACKENDS, REFERENCE, backend_names, gated_backends
from sk_deploy.bundle import FILE_FORMS, GRAPH_FORMS, MODEL_FILE, RAW_FILE, Bundle, form_name, is_trained
from sk_deploy.compare import DEFAULT_LIMIT, Pictures, Runner, compare_runners, logits_of
from sk_deploy.engines.compat import EngineMismatch, check_engine
from sk_deploy.machine import BackendUnavailable, Machine
from sk_deploy.precision.accuracy import GATES, AccuracyReport, Gate, judge, report_for
from sk_deploy.precisions import Precision

FP32_GATE = Gate(min_cosine=0.9999)


@dataclass(frozen=True)
class Pair:
    """One backend running one file of the bundle, at a precision."""

    backend: str
    file: str
    precision: str
    """The gate's key: fp32, fp16, bf16, int8 (the TensorRT form) or int8-cpu."""

    @property
    def runs_at(self) -> str:
        """The precision the backend is opened at (``int8`` for either INT8 form, ``bf16`` on the fp32 graph)."""
        forms = [f.precision for f in GRAPH_FORMS if f.file == self.file and form_name(f) == self.precision]
        return forms[0] if forms else self.precision.removesuffix("-cpu")


def file_precision(entry: dict[str, Any]) -> str:
    """The precision key of a manifest file entry: fp32, fp16, int8 (TensorRT form) or int8-cpu."""
    if entry.get("role") == "engine":
        return str(entry.get("precision", "fp32"))
    role = entry.get("role", "model")
    return role if role in GATES else "fp32"


def runnable_pairs(bundle: Bundle | dict[str, Any], machine: Machine) -> tuple[list[Pair], list[str]]:
    """The (backend, file) pairs ``machine`` can run, for every backend the table marks for ``verify``, and one
    line for each it cannot and why."""
    files = Bundle.of(bundle).file_entries()
    pairs = [Pair(REFERENCE, RAW_FILE, "fp32")] if RAW_FILE in files else []
    skipped = []
    verified = [BACKENDS[name] for name in backend_names(verify=True)]
    for spec in (s for s in verified if s.runs == "onnx"):
        missing = spec.machine_refusal(machine)
        if missing:
            skipped.append(f"{spec.name}: {missing}")
            continue
        served, refused = served_graphs(files, spec.name, machine)
        pairs += served
        skipped += [f"{spec.name} {precision}: {why}" for precision, why in refused]
    for spec in (s for s in verified if s.runs == "engine"):
        engines = [name for name, entry in files.items() if entry.get("role") == "engine"]
        for name in engines:
            try:
                check_engine(files[name], machine.tensorrt_version, machine.gpu_name, machine.compute_capability,
                             name)
            except EngineMismatch as exc:
                skipped.append(f"{spec.name}: {exc}")
                continue
            pairs.append(Pair(spec.name, name, file_precision(files[name])))
        if not engines:
            skipped.append(f"{spec.name}: the bundle has no engine (sk-deploy build, where TensorRT and a GPU are)")
    return pairs, skipped


def _takes(device: str, file: str) -> bool:
    """Whether a backend on ``device`` takes the graph ``file`` (a GPU backend takes no CPU-only form)."""
    form = FILE_FORMS.get(file)
    return device != "gpu" or form is None or form.target != "cpu"


def served_graphs(files: dict[str, dict[str, Any]], backend: str, machine: Machine
                  ) -> tuple[list[Pair], list[tuple[str, str]]]:
    """The graphs of a bundle (its manifest's ``files``) that ``backend`` serves on ``machine``: every graph form of
    each precision its table entry runs (both INT8 forms on a CPU; bf16 on the float32 graph), and (precision, why)
    for each precision it cannot run here (bf16 on a CPU without native bfloat16)."""
    spec = BACKENDS[backend]
    pairs: list[Pair] = []
    skipped: list[tuple[str, str]] = []
    for precision in spec.precisions:
        forms = [f for f in GRAPH_FORMS if f.precision == precision and f.file in files and _takes(spec.device, f.file)]
        if not forms or (spec.device == "cpu" and precision.gpu_only_refusal(backend)):
            continue  # a precision the bundle has no graph for, or tf32 on a CPU, is not served
        refusal = precision.cpu_refusal(machine.cpu) if precision.device == "cpu" else None
        if refusal:
            skipped.append((str(precision), refusal))
            continue
        pairs += [Pair(backend, f.file, form_name(f)) for f in forms]
    return pairs, skipped


def pair_runner(bundle: Bundle, pair: Pair) -> Runner:
    """``pair`` as a comparator runner: its backend of the table on its file, at the precision it runs."""
    from sk_deploy.runners import BackendRunner

    return BackendRunner(pair.backend, bundle.check_file(pair.file), bundle, pair.runs_at)


def compare_backends(bundle: Bundle, pairs: list[Pair], pictures: Pictures, trained: bool) -> list[AccuracyReport]:
    """Run each pair on ``pictures`` and judge it against ``model.onnx`` on ONNX Runtime CPU, each under its
    precision's gate (fp32 on another backend: FP32_GATE)."""
    from sk_deploy.runners import onnx_cpu_runner

    pairs = [p for p in pairs if (p.backend, p.file) != (REFERENCE, MODEL_FILE)]  # the reference itself
    names = {f"{p.backend}: {p.file}" + (f" in {p.precision}" if Precision(p.runs_at).hint else ""): p
             for p in pairs}
    gates = {name: GATES.get(p.precision, FP32_GATE) for name, p in names.items()}
    results = compare_runners(onnx_cpu_runner(bundle.check_file(MODEL_FILE)),
                              {name: pair_runner(bundle, p) for name, p in names.items()}, pictures,
                              lambda name: gates[name].applied(trained))
    return [report_for(r, names[r.name].precision, gates[r.name], trained) for r in results]


def check_backends(
    bundle: Bundle, images: str | Path | None = None, limit: int = DEFAULT_LIMIT, machine: Machine | None = None,
    skip_cpu: bool = True,
) -> tuple[list[AccuracyReport], list[str]]:
    """``sk-deploy verify``'s backend pass: every runnable pair (ort-cpu left out with ``skip_cpu``, since the
    precision check already ran those) against ``model.onnx`` on pictures (a folder, or generated ones);
    recorded under ``stages.verify_backends``. Returns the reports and the lines for what could not run."""
    from sk_deploy.machine import probe_machine

    pairs, skipped = runnable_pairs(bundle, machine or probe_machine())
    pairs = [p for p in pairs if not (skip_cpu and p.backend == REFERENCE)]
    pictures = Pictures.of(bundle.preprocess, images, limit)
    reports = compare_backends(bundle, pairs, pictures, is_trained(bundle.weights)) if pairs else []
    bundle.record("verify_backends", {
        "images": "generated" if images is None else pictures.description, "count": len(pictures),
        "pairs": {r.file: r.to_dict() for r in reports}, "not_run": skipped,
    })
    bundle.save()
    return reports, skipped


def gate_on_backends(graph: Path, key: str, inputs: np.ndarray, reference: np.ndarray, trained: bool,
                     machine: Machine, judged: dict[str, AccuracyReport], chunk: int = 8) -> dict[str, dict[str, Any]]:
    """``graph`` (a precision graph, gate key ``key``) judged under its gate against the float32 ``reference``
    logits of ``inputs`` on every CPU backend of the table that serves it here (``gated_backends``):
    ``{backend: {"accuracy": figures}}``, or ``{"not_measured": why}`` where this machine cannot run it (OpenVINO
    not installed); a backend that does not serve it (fp16 on OpenVINO) has no entry. ``judged`` holds the
    reports already measured (ONNX Runtime's, which decided whether the file is written), reused as they are.

    Each backend is compiled once, without a compiled-model cache, with its defaults but for what a bundle would
    change: an int8 graph on OpenVINO is judged with its float parts in f32 and, on a CPU with native bfloat16,
    again in bf16 (``bf16_float_parts``: OpenVINO serves it so only where that passed too)."""
    from sk_deploy.runners import BackendRunner

    gates: dict[str, dict[str, Any]] = {}
    for name in gated_backends():
        spec = BACKENDS[name]
        served, refused = served_graphs({graph.name: {"role": key}}, name, machine)
        if not served and not refused:
            continue  # nothing to license
        missing = spec.machine_refusal(machine) or (refused[0][1] if refused else None)
        if missing:
            gates[name] = {"not_measured": missing}
            continue
        if name in judged:
            gates[name] = {"accuracy": judged[name].to_dict()}
            continue
        runs_at = served[0].runs_at
        options = spec.default_options(runs_at)
        if hasattr(options, "cache_dir"):  # a one-off compile: no entry in the backend's compiled-model cache
            options = dataclasses.replace(options, cache_dir="")
        variants = {"accuracy": options}
        if runs_at == "int8" and hasattr(options, "int8_float"):  # OpenVINO: what a bundle's figures would change
            variants["accuracy"] = dataclasses.replace(options, int8_float="f32")
            if machine.cpu.native_bf16:
                variants["bf16_float_parts"] = dataclasses.replace(options, int8_float="bf16")
        gates[name] = {}
        for figure, chosen in variants.items():
            try:
                output = logits_of(BackendRunner(name, graph, None, runs_at, chosen), lambda dtype: inputs, chunk)
            except BackendUnavailable as exc:
                if figure == "accuracy":  # the graph as served cannot run there: nothing else to measure
                    gates[name] = {"not_measured": str(exc)}
                    break
                gates[name][figure] = {"passed": False, "not_measured": str(exc)}
                continue
            label = f"{name}: {graph.name}" + (" with bf16 float parts" if figure == "bf16_float_parts" else "")
            gates[name][figure] = judge(label, key, reference, output, trained).to_dict()
    return gates
