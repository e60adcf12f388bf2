"""``sk-deploy evaluate``: top-1 / top-5 of what a bundle serves against ground-truth labels, next to its
agreement with the float32 graph (the comparator of ``compare``), written into the manifest.

What is served: every backend that runs here (ONNX Runtime CPU, OpenVINO; the GPU backends where a GPU is) at every
precision it serves of the bundle: each graph (both INT8 forms), and bf16, which has no file: OpenVINO compiles
the float32 graph in bf16 where the CPU has native bfloat16 (elsewhere it is listed as not run, with the reason).

Labels come from a CSV of ``FILE,CLASS_INDEX`` (ImageNet's validation labels as
``../shared/data/imagenet-val-1300/labels.csv`` has them; FILE is matched by name, or by path relative to the
photo folder), or from an ImageNet-style folder per class (a folder named by wnid takes that wnid's index; other
names take their index in sorted order). With random weights accuracy means nothing: it is recorded, flagged,
and only the agreement is shown.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sk_deploy.backends import BACKENDS, backend_names
from sk_deploy.bundle import FILE_FORMS, MODEL_FILE, RAW_FILE, Bundle, form_name, is_trained
from sk_deploy.compare import Pictures, Runner, VerifyError, compare_runners, image_files
from sk_deploy.errors import SkDeployError
from sk_deploy.machine import Machine
from sk_deploy.metrics import Agreement
from sk_deploy.settings.recipe import AUTO_LABELS

PRECISION_OF = {name: form.precision for name, form in FILE_FORMS.items()}

RANDOM_NOTE = "random weights: accuracy against the labels is meaningless; only the agreement with float32 counts"


def form_names() -> dict[str, str]:
    """Each graph file's precision as recipes name it (``fp32``, ``int8``, ``int8-cpu``, ...)."""
    return {name: form_name(form) for name, form in FILE_FORMS.items()}


class _NoGate:
    def failures(self, figures: Agreement) -> list[str]:
        return []


def read_label_csv(path: str | Path) -> dict[str, int]:
    """A ``FILE,CLASS_INDEX`` CSV (spaces allowed, a header line skipped) as file -> class index."""
    labels: dict[str, int] = {}
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            for number, row in enumerate(csv.reader(handle), 1):
                if not row or not "".join(row).strip():
                    continue
                if len(row) < 2:
                    raise VerifyError(f"{path}:{number}: expected FILE,CLASS_INDEX, got {','.join(row)!r}")
                name, index = row[0].strip(), row[1].strip()
                if not index.lstrip("-").isdigit():
                    if number == 1:
                        continue  # a header
                    raise VerifyError(f"{path}:{number}: class index {index!r} is not a whole number")
                labels[name] = int(index)
    except OSError as exc:
        raise VerifyError(f"{path}: cannot read the labels ({exc.strerror or exc})") from None
    return labels


def folder_labels(images: Path, files: list[Path]) -> dict[Path, int]:
    """Labels of an ImageNet-style folder per class: a wnid folder gets that class's index, others their rank."""
    from sk_deploy.labels import imagenet_synsets

    wnids = {wnid: i for i, (wnid, _) in enumerate(imagenet_synsets())}
    classes = sorted({f.relative_to(images).parts[0] for f in files if len(f.relative_to(images).parts) > 1})
    if not classes:
        return {}
    by_wnid = all(c in wnids for c in classes)
    index = {c: (wnids[c] if by_wnid else i) for i, c in enumerate(classes)}
    return {f: index[f.relative_to(images).parts[0]] for f in files if len(f.relative_to(images).parts) > 1}


def labels_file(labels: str | Path | None, images: Path) -> Path | None:
    """``--labels``: a CSV path, or ``auto`` for the photo folder's own labels.csv when it has one (else None)."""
    if labels == AUTO_LABELS:
        found = Path(images) / "labels.csv"
        return found if found.is_file() else None
    return Path(labels) if labels else None


def labelled_files(images: str | Path, labels: str | Path | None, limit: int | None) -> tuple[list[Path], list[int]]:
    """The first ``limit`` labelled photos of ``images`` and their classes (empty lists: no labels)."""
    images = Path(images)
    files = image_files(images, limit=None)
    if labels is not None:
        table = read_label_csv(labels)
        found = {f: table.get(f.relative_to(images).as_posix(), table.get(f.name)) for f in files}
        chosen = {f: c for f, c in found.items() if c is not None}
        if not chosen:
            raise VerifyError(f"{labels}: names none of the photos in {images}")
    else:
        chosen = folder_labels(images, files)
    picked = list(chosen)[:limit]
    return picked, [chosen[f] for f in picked]


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """The share of rows whose label is among the ``k`` highest logits."""
    k = min(k, logits.shape[1])
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return float(np.mean((top == labels[:, None]).any(axis=1)))


@dataclass
class GraphAccuracy:
    """One graph on one backend: accuracy (None without labels) and agreement with float32."""

    file: str
    precision: str
    backend: str
    top1: float | None
    top5: float | None
    agreement: Agreement

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {"file": self.file, "precision": self.precision, "backend": self.backend,
                "top1": None if self.top1 is None else round(self.top1, 6),
                "top5": None if self.top5 is None else round(self.top5, 6), "agreement": self.agreement.to_dict()}


@dataclass
class EvaluateReport:
    """Every graph's figures on one photo set."""

    images: str
    count: int
    labelled: bool
    trained: bool
    rows: list[GraphAccuracy] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)

    @property
    def notes(self) -> list[str]:
        """What a reader must know (random weights)."""
        return [] if self.trained else [RANDOM_NOTE]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form for the manifest (``stages.evaluate``)."""
        return {"images": self.images, "count": self.count, "labelled": self.labelled,
                "accuracy_meaningful": self.labelled and self.trained, "notes": self.notes,
                "rows": [r.to_dict() for r in self.rows], "skipped": self.skipped}


def predictor_runner(bundle: Bundle, file: str, backend: str) -> Runner:
    """The graph ``file`` (or, for an engine backend, the engine of its precision) on ``backend`` through the
    Predictor, as a comparator runner; a BackendUnavailable when this machine cannot run it."""
    from sk_deploy.runtime.predictor import Predictor

    precision = PRECISION_OF.get(file, "fp32")
    return Predictor(bundle, backend, precision, file=file if BACKENDS[backend].runs == "onnx" else None)


def served(bundle: Bundle, names: list[str], backends: tuple[str, ...], machine: Machine
           ) -> tuple[dict[tuple[str, str, str], Runner], list[dict[str, str | None]]]:
    """Runners by (file, precision, backend) for what ``backends`` serve of the graphs ``names`` on ``machine``, and
    what could not run, with the reason: the CPU backends at every precision they serve of those graphs (both INT8
    forms, bf16 on the float32 graph: ``precision.backends.served_graphs``), the GPU ones through the Predictor (a
    graph, or its engine for an engine backend)."""
    from sk_deploy.bench.latency import one_line
    from sk_deploy.precision.backends import pair_runner, served_graphs

    runners: dict[tuple[str, str, str], Runner] = {}
    skipped: list[dict[str, str | None]] = []
    files = {name: entry for name, entry in bundle.file_entries().items() if name in names}
    for backend in backends:
        spec = BACKENDS.get(backend)
        if spec is None or not spec.evaluate:
            raise VerifyError(f"evaluate does not run {backend!r}; its backends: {', '.join(evaluated_backends())}")
        missing = "no CUDA GPU here" if spec.device == "gpu" and not machine.cuda else spec.machine_refusal(machine)
        if missing:
            skipped.append({"file": None, "precision": None, "backend": backend, "reason": missing})
            continue
        if spec.device == "cpu" and spec.runs == "onnx":
            pairs, refused = served_graphs(files, backend, machine)
            runners.update({(p.file, p.precision, backend): pair_runner(bundle, p) for p in pairs})
            skipped += [{"file": None, "precision": precision, "backend": backend, "reason": why}
                        for precision, why in refused]
            continue
        for name in names:
            precision = form_names().get(name, "fp32")
            try:
                runners[name, precision, backend] = predictor_runner(bundle, name, backend)
            except SkDeployError as exc:
                skipped.append({"file": name, "precision": precision, "backend": backend, "reason": one_line(exc)})
    return runners, skipped


def evaluated_backends() -> tuple[str, ...]:
    """The backends ``evaluate`` runs (the backend table's ``evaluate``)."""
    return backend_names(evaluate=True)


def evaluate_bundle(bundle: Bundle, images: str | Path, labels: str | Path | None = None, limit: int | None = 64,
                    files: list[str] | None = None, record: bool = True, backends: tuple[str, ...] | None = None,
                    machine: Machine | None = None, precisions: tuple[str, ...] | None = None) -> EvaluateReport:
    """Run what the bundle serves (of ``files``, default every graph but the raw export) on each of ``backends``
    (default: every backend ``evaluate`` runs) on the labelled photos of ``images``: accuracy against the labels and
    agreement with ``model.onnx`` on ONNX Runtime CPU. What this machine cannot run is listed with the reason.
    ``precisions`` keeps only those (fp32, fp16, bf16, int8, int8-cpu). Recorded in the manifest under
    ``stages.evaluate`` (each file, precision and backend's row replaced) unless ``record`` is False."""
    from sk_deploy.machine import probe_machine
    from sk_deploy.runners import onnx_cpu_runner

    chosen, classes = labelled_files(images, labels, limit)
    if not chosen:  # no labels at all: agreement only, on the folder's first photos
        chosen = image_files(images, limit)
    pictures = Pictures(list(chosen), str(Path(images).resolve()), bundle.preprocess)
    names = files if files is not None else [n for n in bundle.onnx_files() if n != RAW_FILE]
    truth = np.asarray(classes) if classes else None
    report = EvaluateReport(pictures.description, len(pictures), truth is not None, is_trained(bundle.weights))
    runners, report.skipped = served(bundle, names, backends or evaluated_backends(), machine or probe_machine())
    if precisions is not None:
        runners = {key: r for key, r in runners.items() if key[1] in precisions}
        report.skipped = [s for s in report.skipped if s["precision"] in (None, *precisions)]
    labelled = {" ".join(key): r for key, r in runners.items()}
    compared = compare_runners(onnx_cpu_runner(bundle.file(MODEL_FILE)), labelled, pictures, lambda name: _NoGate())
    for (name, precision, backend), comparison in zip(runners, compared, strict=True):
        logits = comparison.logits
        report.rows.append(GraphAccuracy(
            name, precision, backend,
            None if truth is None else topk_accuracy(logits, truth, 1),
            None if truth is None else topk_accuracy(logits, truth, 5), comparison.agreement))
    if record:
        previous = {(r["file"], r.get("precision"), r["backend"]): r for r in bundle.stage("evaluate").get("rows", [])}
        previous.update({(r.file, r.precision, r.backend): r.to_dict() for r in report.rows})
        bundle.record("evaluate", {**report.to_dict(), "rows": list(previous.values())})
        bundle.save()
    return report
