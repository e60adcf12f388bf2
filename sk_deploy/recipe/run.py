"""``sk-deploy run``: every stage of a recipe in order, each skipped when its inputs and settings are unchanged.

Stages: export (the float32 bundle), verify (against PyTorch), then per precision: quantize (the graph), build
(a TensorRT engine, GPU target), evaluate (accuracy and agreement with float32), bench (latency beside PyTorch
eager fp32 in the same run); last the report. Each stage's key is the sha256 of its settings and of its inputs
(the files it reads, the photo folders' listings); it is recorded in the manifest (``stages.run``) and a stage
whose key is already there, with its outputs intact, is not run again. A stage this machine cannot run is
skipped with the reason. The stage functions are the package's own (graph, precision, engines, evaluate, bench).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sk_deploy.backends import BACKENDS, bench_backends, evaluate_backends
from sk_deploy.bundle import MODEL_FILE, Bundle, BundleError, GraphForm, check_target, sha256_file
from sk_deploy.errors import SkDeployError
from sk_deploy.images import find_images
from sk_deploy.machine import Machine, probe_machine
from sk_deploy.recipe.schema import Recipe

RUN_STAGE = "run"
AUTO_LABELS = "auto"


@dataclass
class StageResult:
    """What one stage did: ``done``, ``unchanged`` (its key was recorded), ``skipped`` (with the reason) or
    ``failed`` (with the reason)."""

    name: str
    status: str
    seconds: float = 0.0
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form."""
        return {"stage": self.name, "status": self.status, "seconds": round(self.seconds, 2), "reason": self.reason}


def folder_fingerprint(folder: str | Path | None) -> str | None:
    """sha256 of a photo folder's listing (relative names, sizes, modification times), None without one."""
    if folder is None:
        return None
    folder = Path(folder)
    listing = [(p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns) for p in find_images(folder)]
    return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def stage_key(settings: Any, inputs: dict[str, str | None]) -> str:
    """The sha256 of a stage's settings and of its inputs' sha256s."""
    text = json.dumps({"settings": settings, "inputs": inputs}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Hooks:
    """The progress display: a stage starts, says what it is doing, ends."""

    start: Callable[[str], None] = lambda name: None
    update: Callable[[str], None] = lambda message: None
    end: Callable[[StageResult], None] = lambda result: None


@dataclass
class RecipeRun:
    """One run of ``recipe`` into the bundle at ``out``; ``results`` fill in as stages end."""

    recipe: Recipe
    out: Path
    hooks: Hooks = field(default_factory=Hooks)
    results: list[StageResult] = field(default_factory=list)
    machine: Machine | None = None

    # ------------------------------------------------------------------------------------------ plumbing

    def _bundle(self) -> Bundle:
        return Bundle.open(self.out)

    def _keys(self) -> dict[str, str]:
        try:
            return dict(self._bundle().stage(RUN_STAGE).get("keys", {}))
        except BundleError:
            return {}

    def _stage(self, name: str, key: str, outputs: Callable[[Bundle], bool], work: Callable[[], str | None]) -> str:
        """Run ``work`` unless ``key`` is recorded for ``name`` and ``outputs`` are intact; record the key. ``work``
        returns None when done, or a reason it failed. Returns the key (the next stages' input)."""
        self.hooks.start(name)
        start = time.perf_counter()
        try:
            if self._keys().get(name) == key and outputs(self._bundle()):
                result = StageResult(name, "unchanged", time.perf_counter() - start)
            else:
                failure = work()
                result = StageResult(name, "failed" if failure else "done", time.perf_counter() - start, failure or "")
                if not failure:
                    bundle = self._bundle()
                    record = bundle.stage(RUN_STAGE)
                    bundle.record(RUN_STAGE, {**record, "keys": {**record.get("keys", {}), name: key}})
                    bundle.save()
        except SkDeployError as exc:
            result = StageResult(name, "failed", time.perf_counter() - start, str(exc))
        self.results.append(result)
        self.hooks.end(result)
        return key

    def _skip(self, name: str, reason: str) -> None:
        self.hooks.start(name)
        result = StageResult(name, "skipped", reason=reason)
        self.results.append(result)
        self.hooks.end(result)

    @staticmethod
    def _intact(*files: str) -> Callable[[Bundle], bool]:
        def check(bundle: Bundle) -> bool:
            try:
                for name in files:
                    bundle.check_file(name)
            except BundleError:
                return False
            return True
        return check

    def _file_sha(self, name: str) -> str | None:
        try:
            return str(self._bundle().entry(name).get("sha256"))
        except BundleError:
            return None

    @property
    def _photos(self) -> Path | None:
        images = self.recipe.calibration.images
        return Path(images) if images else None

    @property
    def _eval_photos(self) -> Path | None:
        images = self.recipe.evaluate.images or self.recipe.calibration.images
        return Path(images) if images else None

    # ------------------------------------------------------------------------------------------ stages

    def execute(self) -> list[StageResult]:
        """Every stage in order; a failed export or verify stops the run (nothing else has a graph to read)."""
        self._check_out()
        export_key = self._export()
        if self.results[-1].status == "failed":
            return self.results
        verify_key = self._verify(export_key)
        if self.results[-1].status == "failed":
            return self.results
        keys = [export_key, verify_key]
        for name, form in self.recipe.forms().items():
            graph_key = export_key if form.file == MODEL_FILE else self._quantize(name, form, export_key)
            keys.append(graph_key)
            if self.results[-1].status == "failed":
                continue
            keys.append(self._build(name, form, graph_key))
            keys.append(self._evaluate(name, form, graph_key))
            keys.append(self._bench(name, form, keys[-2]))
        self._report(keys)
        return self.results

    def _check_out(self) -> None:
        if self.out.is_dir() and any(self.out.iterdir()) and not (self.out / "manifest.json").is_file():
            check_target(self.out)  # a non-empty directory that is not a bundle: refused, not replaced

    def _export(self) -> str:
        from sk_deploy.graph.pipeline import export_bundle
        from sk_deploy.settings.graph import ExportSettings

        recipe, section = self.recipe, self.recipe.export
        weights = recipe.model.weights
        path = None if weights in ("random", "pretrained") else Path(weights)
        inputs = {"weights": sha256_file(path) if path and path.is_file() else None,
                  "bn_photos": folder_fingerprint(self._photos) if section.recompute_bn else None}
        key = stage_key({"model": recipe.model.model_dump(), "export": section.model_dump(mode="json")}, inputs)

        def work() -> None:
            request = ExportSettings(
                model=recipe.model.name, out=self.out, weights=path, pretrained=weights == "pretrained",
                **section.model_dump(), force=True, verify=False, images=self._photos)
            export_bundle(request, progress=self.hooks.update)

        return self._stage("export", key, self._intact(MODEL_FILE), work)

    def _verify(self, export_key: str) -> str:
        from sk_deploy.graph.verify import verify_bundle
        from sk_deploy.models.reference import build_reference
        from sk_deploy.runners import onnx_cpu_runner

        key = stage_key({"images": str(self._eval_photos)}, {"export": export_key,
                                                             "photos": folder_fingerprint(self._eval_photos)})

        def work() -> str | None:
            bundle = self._bundle()
            self.hooks.update("against PyTorch")
            report = verify_bundle(bundle, build_reference(bundle.model_name, bundle.weights, bundle.path),
                                   onnx_cpu_runner, images=self._eval_photos)
            failed = [f"{f.file}: {'; '.join(f.failures)}" for f in report.files if not f.passed]
            return "; ".join(failed) or None

        return self._stage("verify", key, lambda bundle: True, work)

    def _quantize(self, name: str, form: GraphForm, export_key: str) -> str:
        from sk_deploy.precision.pipeline import quantize_bundle
        from sk_deploy.settings.precision import QuantizeSettings

        calib, settings = self.recipe.calibration, self.recipe.precisions[name]
        uses_photos = form.precision == "int8" or self._photos is not None
        key = stage_key({"form": form.file, "precision": settings.model_dump(mode="json"),
                         "calibration": calib.model_dump(mode="json") if form.precision == "int8" else
                         {"images": str(calib.images), "holdout_size": calib.holdout_size}},
                        {"model": self._file_sha(MODEL_FILE), "export": export_key,
                         "photos": folder_fingerprint(self._photos) if uses_photos else None})

        def work() -> str | None:
            request = QuantizeSettings(bundle=self.out, precision=form.precision, target=form.target or "tensorrt",
                                       **{**calib.model_dump(), "images": self._photos}, **settings.model_dump())
            result = quantize_bundle(request, lambda message, total: self.hooks.update(message))
            if not result.accuracy.passed and not result.written:
                return f"{result.file} misses its accuracy gate ({'; '.join(result.accuracy.failures)}); not added"
            return None

        return self._stage(f"{name}: quantize", key, self._intact(form.file), work)

    def _build(self, name: str, form: GraphForm, graph_key: str) -> str:
        from sk_deploy.machine import tensorrt_version

        stage = f"{name}: build"
        if self.recipe.target != "gpu":
            return graph_key  # the CPU target builds no engine
        version = tensorrt_version()
        if version is None:
            self._skip(stage, "TensorRT is not installed on this machine (pip install tensorrt, on a GPU machine)")
            return graph_key
        from sk_deploy.engines.tensorrt import BuildRequest, build_engine

        settings = self.recipe.build
        key = stage_key({"build": settings.model_dump(mode="json"), "tensorrt": version}, {"graph": graph_key})
        built: list[str] = []

        def work() -> None:
            request = BuildRequest(bundle=self.out, precision=form.precision, workspace=settings.workspace,
                                   timing_cache=Path(settings.timing_cache) if settings.timing_cache else None,
                                   hardware_compat=settings.hardware_compat)
            built.append(build_engine(request, progress=self.hooks.update)[0])

        def engine_present(bundle: Bundle) -> bool:
            return bool(bundle.engines(form.precision))

        return self._stage(stage, key, engine_present, work)

    def _evaluate(self, name: str, form: GraphForm, graph_key: str) -> str:
        from sk_deploy.evaluate import evaluate_bundle

        photos, section = self._eval_photos, self.recipe.evaluate
        stage = f"{name}: evaluate"
        if photos is None:
            self._skip(stage, "no photos: set evaluate.images (or calibration.images)")
            return graph_key
        labels = self._labels(photos)
        key = stage_key({"evaluate": section.model_dump(mode="json"), "images": str(photos)},
                        {"graph": graph_key, "model": self._file_sha(MODEL_FILE),
                         "photos": folder_fingerprint(photos), "labels": sha256_file(labels) if labels else None})

        def work() -> None:
            self.hooks.update(f"{form.file} on {photos}")
            evaluate_bundle(self._bundle(), photos, labels, section.limit, files=[form.file],
                            backends=evaluate_backends(self.recipe.target), precisions=(name,))

        return self._stage(stage, key, lambda bundle: True, work)

    def _machine(self) -> Machine:
        if self.machine is None:
            self.machine = probe_machine()
        return self.machine

    def _labels(self, photos: Path) -> Path | None:
        """``evaluate.labels``: a CSV path, or ``auto`` for the photo folder's own labels.csv when it has one."""
        from sk_deploy.evaluate import labels_file

        return labels_file(self.recipe.evaluate.labels, photos)

    def _bench(self, name: str, form: GraphForm, graph_key: str) -> str:
        from sk_deploy.bench.latency import BenchConfig, BenchRun
        from sk_deploy.machine import cpu_name

        section = self.recipe.bench
        if self.recipe.target == "gpu" and not self._machine().cuda:
            gpu = ", ".join(name for name in bench_backends("gpu", form.precision) if BACKENDS[name].device == "gpu")
            self._skip(f"{name}: bench", f"the gpu target's backends ({gpu}) need an NVIDIA GPU, and none is "
                       "visible here")
            return graph_key
        backends = bench_backends(self.recipe.target, form.precision)
        config = BenchConfig(backends=backends, precisions=(form.precision,), batches=tuple(section.batch_sizes),
                             warmup_s=section.warmup_ms / 1000, duration_s=section.duration_ms / 1000,
                             threads=section.threads)
        key = stage_key({"bench": section.model_dump(mode="json"), "backends": backends, "cpu": cpu_name()},
                        {"graph": graph_key})

        def work() -> None:
            bundle = self._bundle()
            run = BenchRun(bundle, config, self._machine())
            run.execute(on_start=self.hooks.update)
            bundle = self._bundle()
            bundle.record("bench", {"rows": [r.to_dict() for r in run.rows], "machine": run.machine.describe()},
                          key=name)
            bundle.save()

        return self._stage(f"{name}: bench", key, lambda bundle: bool(bundle.stage("bench").get(name)), work)

    def _report(self, keys: list[str]) -> None:
        from sk_deploy.recipe.report import REPORT_FILES, write_report

        settings = {"precisions": list(self.recipe.precisions), "batch_sizes": list(self.recipe.bench.batch_sizes)}
        key = stage_key(settings, {str(i): k for i, k in enumerate(keys)})

        def work() -> None:
            write_report(self._bundle(), self.recipe)

        self._stage("report", key, self._intact(*REPORT_FILES.values()), work)

    @property
    def failed(self) -> list[StageResult]:
        """The stages that failed."""
        return [r for r in self.results if r.status == "failed"]
