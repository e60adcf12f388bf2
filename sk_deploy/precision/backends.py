"""Every backend that can run a bundle here, against the float32 graph on the same pictures (like
``polygraphy run --trt --onnxrt``): ONNX Runtime CPU on each ONNX file, OpenVINO on each graph of a precision it
serves (bf16 included: the float32 graph compiled in bf16, where the CPU has it natively), ONNX Runtime CUDA where
its provider and a GPU are there, and each TensorRT engine built for this GPU and TensorRT. Each pair gets its
precision's gate (``accuracy.GATES``; fp32 on another backend: ``FP32_GATE``, which leaves room for TF32 on GPUs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sk_deploy.bundle import GRAPH_FORMS, MODEL_FILE, RAW_FILE, Bundle, form_name, gpu_only_refusal
from sk_deploy.compare import DEFAULT_LIMIT, BatchFor, Pictures, Runner, compare_runners, onnx_runner
from sk_deploy.engines.compat import EngineMismatch, check_engine
from sk_deploy.machine import BackendUnavailable, Machine
from sk_deploy.models.reference import is_trained
from sk_deploy.precision.accuracy import GATES, AccuracyReport, Gate, report_for

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
        return forms[0] if forms else self.precision


def file_precision(entry: dict[str, Any]) -> str:
    """The precision key of a manifest file entry: fp32, fp16, int8 (TensorRT form) or int8-cpu."""
    if entry.get("role") == "engine":
        return str(entry.get("precision", "fp32"))
    role = entry.get("role", "model")
    return role if role in GATES else "fp32"


def runnable_pairs(bundle: Bundle | dict[str, Any], machine: Machine) -> tuple[list[Pair], list[str]]:
    """The (backend, file) pairs ``machine`` can run, and one line for each it cannot and why."""
    files = Bundle.of(bundle).file_entries()
    onnx_files = [name for name in files if name.endswith(".onnx")]
    pairs = [Pair("ort-cpu", RAW_FILE, "fp32")] if RAW_FILE in files else []
    pairs += served_graphs(files, "ort-cpu", machine)[0]
    openvino, openvino_refused = served_graphs(files, "openvino", machine)
    pairs += openvino
    skipped: list[str] = []
    if machine.cuda and "CUDAExecutionProvider" in machine.ort_providers:
        pairs += [Pair("ort-cuda", name, file_precision(files[name])) for name in onnx_files
                  if files[name].get("role") != "int8-cpu"]
    else:
        skipped.append("ort-cuda: " + ("no CUDA GPU" if not machine.cuda else "onnxruntime-gpu's CUDA provider "
                                       "is not installed"))
    skipped += [f"openvino {precision}: {why}" for precision, why in openvino_refused]
    engines = [name for name, entry in files.items() if entry.get("role") == "engine"]
    for name in engines:
        try:
            check_engine(files[name], machine.tensorrt_version, machine.gpu_name, machine.compute_capability, name)
        except EngineMismatch as exc:
            skipped.append(f"tensorrt: {exc}")
            continue
        pairs.append(Pair("tensorrt", name, file_precision(files[name])))
    if not engines:
        skipped.append("tensorrt: the bundle has no engine (sk-deploy build, where TensorRT and a GPU are)")
    return pairs, skipped


def served_graphs(files: dict[str, dict[str, Any]], backend: str, machine: Machine
                  ) -> tuple[list[Pair], list[tuple[str, str]]]:
    """The graphs of a bundle (its manifest's ``files``) that the CPU backend ``backend`` serves on ``machine``:
    every graph form of each precision the backend's table entry runs (both INT8 forms; bf16 on the float32
    graph), and (precision, why) for each precision it cannot run here (bf16 on a CPU without native bfloat16)."""
    from sk_deploy.runtime.predictor import BACKEND_SPECS

    spec = BACKEND_SPECS[backend]
    pairs, skipped = [], []
    for precision in spec.precisions:
        forms = [f for f in GRAPH_FORMS if f.precision == precision and f.file in files]
        if gpu_only_refusal(precision, backend) or not forms:
            continue  # tf32 is not served on a CPU; a precision the bundle has no graph for is not served at all
        try:
            if spec.check is not None:
                spec.check(precision, machine)
        except BackendUnavailable as exc:
            skipped.append((precision, str(exc)))
            continue
        pairs += [Pair(backend, f.file, form_name(f)) for f in forms]
    return pairs, skipped


def pair_runner(bundle: Bundle, pair: Pair, chunk: int = 8) -> Runner:
    """``pair`` as a comparator runner: its backend from the Predictor's table, in chunks its profile takes."""
    from sk_deploy.runtime.predictor import BACKEND_SPECS

    spec = BACKEND_SPECS[pair.backend]
    precision = pair.runs_at

    def run(batch_for: BatchFor) -> np.ndarray:
        batch = batch_for(bundle.input_spec.dtype)
        with spec.open(bundle.check_file(pair.file), bundle, precision,
                       spec.options(precision, False)) as backend:
            step = backend.max_batch or chunk
            return np.concatenate([backend.run(batch[i:i + step]) for i in range(0, len(batch), step)])

    return run


def compare_backends(bundle: Bundle, pairs: list[Pair], pictures: Pictures, trained: bool) -> list[AccuracyReport]:
    """Run each pair on ``pictures`` and judge it against ``model.onnx`` on ONNX Runtime CPU, each under its
    precision's gate (fp32 on another backend: FP32_GATE)."""
    pairs = [p for p in pairs if (p.backend, p.file) != ("ort-cpu", MODEL_FILE)]  # the reference itself
    names = {f"{p.backend}: {p.file}" + (" in bf16" if p.precision == "bf16" else ""): p for p in pairs}
    gates = {name: GATES.get(p.precision, FP32_GATE) for name, p in names.items()}
    results = compare_runners(onnx_runner(bundle.check_file(MODEL_FILE)),
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
    pairs = [p for p in pairs if not (skip_cpu and p.backend == "ort-cpu")]
    pictures = Pictures.of(bundle.preprocess, images, limit)
    reports = compare_backends(bundle, pairs, pictures, is_trained(bundle.weights)) if pairs else []
    bundle.record("verify_backends", {
        "images": "generated" if images is None else pictures.description, "count": len(pictures),
        "pairs": {r.file: r.to_dict() for r in reports}, "not_run": skipped,
    })
    bundle.save()
    return reports, skipped
