"""The bundle: the directory that flows through every stage, with ``manifest.json`` describing its files.

A bundle holds the model files (``model.raw.onnx``, ``model.onnx``, later precision variants and engines) and a
manifest: the model's name and weights, its input and output, its preprocessing, where its labels come from,
each file's sha256 and the tool versions that made it, and the figures each stage measured. Every write is
atomic (temporary name, then rename); a new bundle is built in a staging directory beside its target and
renamed into place only when complete, so an interrupted export leaves nothing half-written.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from sk_deploy.errors import SkDeployError
from sk_deploy.images import Preprocess
from sk_deploy.jsonout import dumps
from sk_deploy.precisions import parse_precision

MANIFEST = "manifest.json"
FORMAT = "sk-deploy-bundle"
FORMAT_VERSION = 1
_TOOLS = ("sk-deploy", "torch", "onnx", "onnxruntime", "onnxscript", "onnx-ir", "onnxslim", "numpy")


class BundleError(SkDeployError, RuntimeError):
    """A bundle that cannot be created, read or updated; the message is meant for a person."""


class MissingGraph(BundleError):
    """The bundle has no graph of a precision for a device; ``forms`` are the files that would do, ``make`` the
    command that makes the first."""

    def __init__(self, message: str, precision: str, forms: tuple[GraphForm, ...]) -> None:
        super().__init__(message)
        self.precision, self.forms = precision, forms

    @property
    def make(self) -> str:
        """The command that makes the preferred missing file."""
        return self.forms[0].make


class InputError(SkDeployError, ValueError):
    """An input array of the wrong dtype or shape for the bundle; the message names the expected one."""


@dataclass(frozen=True)
class GraphForm:
    """One ONNX graph a bundle may hold: its file, its precision, what it is made for and how to make it.

    ``target``: ``None`` for the one form of its precision (every device runs it), ``cpu`` for a form only ONNX
    Runtime's CPU provider should run, ``tensorrt`` for the form GPUs (TensorRT, its ONNX Runtime provider)
    take and the CPU can fall back to.
    """

    file: str
    precision: str
    target: str | None
    make: str


#: The precision -> file table, with the command that makes each file; the order is the CPU's preference.
GRAPH_FORMS: tuple[GraphForm, ...] = (
    GraphForm("model.onnx", "fp32", None, "sk-deploy export MODEL --out BUNDLE"),
    GraphForm("model.fp16.onnx", "fp16", None, "sk-deploy quantize BUNDLE --precision fp16"),
    GraphForm("model.int8-cpu.onnx", "int8", "cpu", "sk-deploy quantize BUNDLE --precision int8 --target cpu "
              "--images PHOTOS"),
    GraphForm("model.int8.onnx", "int8", "tensorrt", "sk-deploy quantize BUNDLE --precision int8 --target tensorrt "
              "--images PHOTOS"),
    # bf16 has no file of its own: OpenVINO compiles the float32 graph with bf16 inference precision, on CPUs.
    GraphForm("model.onnx", "bf16", "cpu", "sk-deploy export MODEL --out BUNDLE"),
)
#: Each file's own form: the first in GRAPH_FORMS that names it (bf16 is compiled from the fp32 graph's file).
FILE_FORMS: dict[str, GraphForm] = {form.file: form for form in reversed(GRAPH_FORMS)}
RAW_FILE = "model.raw.onnx"
MODEL_FILE = "model.onnx"
DEVICES = ("cpu", "gpu")


def form_name(form: GraphForm, table: tuple[GraphForm, ...] = GRAPH_FORMS) -> str:
    """A graph form's name in a recipe and a report: its precision, with ``-cpu`` for the CPU-only form of a
    precision that has another (``int8-cpu`` beside TensorRT's ``int8``); a precision's one form is its plain
    name (``bf16``)."""
    shared = sum(1 for f in table if f.precision == form.precision) > 1
    return f"{form.precision}-cpu" if form.target == "cpu" and shared else form.precision


def graph_forms(precision: str, device: str = "cpu") -> tuple[GraphForm, ...]:
    """The graphs that run ``precision`` on ``device`` (cpu or gpu), preferred first; an unknown precision is
    a BundleError."""
    try:
        asked = parse_precision(precision)
    except ValueError as exc:
        raise BundleError(str(exc)) from None
    # a precision without forms of its own (tf32: arithmetic of GPUs) runs its graph precision's forms
    forms = tuple(f for f in GRAPH_FORMS if f.precision == asked) or \
        tuple(f for f in GRAPH_FORMS if f.precision == asked.graph)
    return forms if device == "cpu" else tuple(f for f in forms if f.target != "cpu")


def graph_form(precision: str, target: str | None = None) -> GraphForm:
    """The graph ``sk-deploy quantize`` (or export) makes for ``precision`` and ``target`` (tensorrt or cpu)."""
    forms = graph_forms(precision)
    return next((f for f in forms if f.target == target), forms[-1])


@dataclass(frozen=True)
class InputSpec:
    """The array a bundle's model takes: name, dtype, layout and the shape of one picture."""

    name: str
    dtype: str
    layout: str
    item_shape: tuple[int, ...]

    @classmethod
    def from_description(cls, described: dict[str, Any], layout: str | None = None) -> InputSpec:
        """An InputSpec from an ``input`` description (the manifest's, or a file entry's)."""
        dims = tuple(int(d) for d in described["shape"][1:])
        layout = layout or str(described.get("layout") or ("NCHW" if dims[:1] == (3,) else "NHWC"))
        return cls(str(described["name"]), str(described["dtype"]), layout, dims)

    def describe(self) -> str:
        """``float32 (N, 3, 224, 224)``."""
        return f"{self.dtype} (N, {', '.join(map(str, self.item_shape))})"

    def check(self, batch: Any) -> np.ndarray:
        """``batch`` as a contiguous array of this dtype and shape (floats of another width are cast)."""
        array = np.asarray(batch)
        if array.ndim == len(self.item_shape):
            array = array[None]
        wrong_dtype = array.dtype != np.dtype(self.dtype) and not (
            self.dtype == "float32" and np.issubdtype(array.dtype, np.floating))
        if wrong_dtype or tuple(array.shape[1:]) != self.item_shape or array.shape[0] < 1:
            raise InputError(f"expected a {self.describe()} {self.layout} array, got {array.dtype} "
                             f"{tuple(array.shape)}")
        return np.ascontiguousarray(array, dtype=self.dtype)

    def example(self, size: int = 1, seed: int = 0) -> np.ndarray:
        """A random batch of ``size`` pictures in this form."""
        rng = np.random.default_rng(seed)
        shape = (size, *self.item_shape)
        if self.dtype == "uint8":
            return rng.integers(0, 256, shape, dtype=np.uint8)
        return rng.standard_normal(shape, dtype=np.float32)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def tool_versions() -> dict[str, str]:
    """Versions of Python and of the packages that make and check bundles (absent ones are left out)."""
    versions = {"python": platform.python_version()}
    for name in _TOOLS:
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions[name] = metadata.version(name)
    return versions


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A fresh temporary name beside ``path`` to write to; renamed over ``path`` if the block succeeds.

    The temporary file is created with the usual permissions (umask applies) and removed on any error.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``."""
    with atomic_path(path) as tmp, open(tmp, "xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def is_trained(weights: dict[str, Any]) -> bool:
    """Whether a manifest's weights record (``Bundle.weights``) stands for trained weights (a checkpoint, the
    hub's, or an imported ONNX file's)."""
    if weights.get("source") == "bundle":
        return is_trained(weights.get("base", {}))
    return weights.get("source") in ("file", "pretrained", "onnx")


def atomic_write_json(path: str | Path, document: Any) -> None:
    """Write ``document`` as indented strict JSON (non-finite figures as null), atomically."""
    atomic_write_bytes(path, (dumps(document, indent=2, sort_keys=False) + "\n").encode("utf-8"))


def check_target(path: str | Path, force: bool = False) -> Path:
    """Refuse an output directory that cannot take a new bundle; return it resolved.

    A missing or empty directory is fine; a non-empty one only with ``force``; a file, or a parent that cannot
    be written, never.
    """
    path = Path(path).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise BundleError(f"{path}: exists and is not a directory")
    if path.is_dir() and any(path.iterdir()) and not force:
        raise BundleError(f"{path}: directory is not empty; pass --force to replace it")
    parent = path.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise BundleError(f"{path}: cannot write there ({parent} is not a writable directory)")
    return path


@contextlib.contextmanager
def staging(target: str | Path, force: bool = False) -> Iterator[Path]:
    """A temporary directory beside ``target`` to build a bundle in; renamed to ``target`` on success.

    On any error the staging directory is removed and ``target`` is left as it was. With ``force`` an
    existing ``target`` is replaced only once the new bundle is complete.
    """
    target = check_target(target, force)
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
    try:
        yield stage
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(stage, 0o777 & ~umask)  # mkdtemp makes it private; a bundle is an ordinary directory
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.replace(target, old / target.name)
            os.replace(stage, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(stage, target)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


@dataclass
class Bundle:
    """A bundle directory and its manifest (a plain JSON-ready dict)."""

    path: Path
    manifest: dict[str, Any]

    @classmethod
    def new(cls, path: str | Path, model: dict[str, Any]) -> Bundle:
        """A fresh manifest for ``model`` (name, weights, ...) in directory ``path`` (not written yet)."""
        manifest: dict[str, Any] = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model": model,
            "input": {},
            "output": {},
            "preprocess": {},
            "labels": {},
            "files": {},
            "tools": tool_versions(),
            "stages": {},
        }
        return cls(Path(path), manifest)

    @classmethod
    def open(cls, path: str | Path) -> Bundle:
        """Read the bundle at ``path``; a missing or unreadable manifest is a BundleError."""
        path = Path(path)
        if path.is_file():
            raise BundleError(f"{path}: is a file, not a bundle directory")
        if not path.is_dir():
            raise BundleError(f"{path}: not a bundle directory (no such directory)")
        manifest_path = path / MANIFEST
        if not manifest_path.is_file():
            raise BundleError(f"{path}: not a bundle (no {MANIFEST})")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(f"{manifest_path}: cannot read manifest ({exc})") from None
        if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
            raise BundleError(f"{manifest_path}: not an sk-deploy bundle manifest")
        if manifest.get("format_version", 0) > FORMAT_VERSION:
            raise BundleError(
                f"{manifest_path}: bundle format {manifest['format_version']} is newer than this sk-deploy "
                f"understands ({FORMAT_VERSION}); upgrade sk-deploy"
            )
        return cls(path, manifest)

    @classmethod
    def of(cls, source: Bundle | dict[str, Any] | str | Path) -> Bundle:
        """``source`` as a Bundle: itself, a manifest dict (a bundle with no directory), or a path to open."""
        if isinstance(source, Bundle):
            return source
        if isinstance(source, dict):
            return cls(Path("."), source)
        return cls.open(source)

    # The manifest's sections, typed: nothing outside this module reads the manifest by key.

    @property
    def model_name(self) -> str:
        """The registered model the bundle was exported from."""
        return str(self.manifest["model"]["name"])

    @property
    def weights(self) -> dict[str, Any]:
        """The weights record (source, seed / path and sha256 / hub id; ``bundle`` for weights it holds)."""
        return dict(self.manifest["model"].get("weights", {}))

    @property
    def input_spec(self) -> InputSpec:
        """The array the bundle's model takes."""
        return InputSpec.from_description(self.manifest["input"], str(self.manifest["input"].get("layout", "NCHW")))

    def manifest_input(self) -> dict[str, Any]:
        """The manifest's input description (name, dtype, shape, layout, batch profile), a copy."""
        return dict(self.manifest["input"])

    @property
    def input_name(self) -> str:
        """The graph input's name."""
        return str(self.manifest["input"]["name"])

    @property
    def input_shape(self) -> list[Any]:
        """The graph input's shape, batch axis first (a name or None where dynamic)."""
        return list(self.manifest["input"]["shape"])

    @property
    def output_name(self) -> str:
        """The graph output's name."""
        return str(self.manifest["output"]["name"])

    @property
    def classes(self) -> int:
        """How many classes the output scores."""
        return int(self.manifest["output"]["shape"][-1])

    @property
    def batch_profile(self) -> tuple[int, int, int]:
        """The batch sizes to serve, (min, opt, max), recorded at export."""
        batch = self.manifest["input"]["batch"]
        return int(batch["min"]), int(batch["opt"]), int(batch["max"])

    @property
    def preprocess(self) -> Preprocess:
        """The preprocessing the model was exported with (resize, crop, interpolation, mean, std)."""
        entry = self.manifest["preprocess"]
        return Preprocess(resize=int(entry["resize"]), crop=int(entry["crop"]),
                          interpolation=str(entry["interpolation"]), mean=tuple(entry["mean"]), std=tuple(entry["std"]))

    @property
    def preprocess_in_graph(self) -> bool:
        """Whether ``model.onnx`` takes uint8 NHWC pictures and preprocesses them itself."""
        return bool(self.manifest["preprocess"].get("in_graph"))

    @property
    def labels_source(self) -> str | None:
        """Where the class labels come from (``imagenet-1k``)."""
        return self.manifest.get("labels", {}).get("source")

    def describe_io(self, *, input: dict[str, Any], output: dict[str, Any], preprocess: dict[str, Any],
                    labels: dict[str, Any]) -> None:
        """Set the input (with layout and batch profile), output, preprocessing and labels sections at export."""
        self.manifest.update(input=input, output=output, preprocess=preprocess, labels=labels)

    def summary(self) -> dict[str, Any]:
        """The sections a person inspects: model, input, preprocess, labels, stages (copies)."""
        return {key: self.manifest.get(key, {}) for key in ("model", "input", "preprocess", "labels", "stages")}

    def entry(self, name: str) -> dict[str, Any]:
        """The manifest's record of file ``name`` (role, bytes, sha256, ...); an unknown one is a BundleError."""
        files = self.manifest["files"]
        if name not in files:
            raise BundleError(f"{self.path}: bundle has no file {name!r} (has: {', '.join(files) or 'none'})")
        return files[name]

    def file_entries(self) -> dict[str, dict[str, Any]]:
        """Every recorded file and its record, in the order they were added."""
        return dict(self.manifest["files"])

    def has(self, name: str) -> bool:
        """Whether the manifest records file ``name``."""
        return name in self.manifest["files"]

    def graph(self, precision: str, device: str = "cpu", where: str = "", prefer: str | None = None) -> str:
        """The bundle's ONNX file that runs ``precision`` on ``device`` (cpu or gpu), preferred first (the form
        whose target is ``prefer`` before the others); a MissingGraph saying which file would do and how to make
        it. ``where`` ends its first clause."""
        forms = graph_forms(precision, device)
        if prefer is not None:
            forms = tuple(sorted(forms, key=lambda form: form.target != prefer))
        for form in forms:
            if self.has(form.file):
                return form.file
        also = f" (or {forms[1].file})" if len(forms) > 1 else ""
        raise MissingGraph(f"the bundle has no {precision} graph {forms[0].file}{also}{where}; make it: "
                           f"{forms[0].make}", precision, forms)

    def engines(self, precision: str, gpu_name: str | None = None, tensorrt_version: str | None = None) -> list[str]:
        """The bundle's TensorRT engines of ``precision``, one built on ``gpu_name`` with ``tensorrt_version``
        first."""
        names = [n for n, e in self.manifest["files"].items()
                 if e.get("role") == "engine" and e.get("precision") == precision]

        def built_here(name: str) -> bool:
            entry = self.manifest["files"][name]
            return (entry.get("gpu", {}).get("name"), entry.get("tensorrt", {}).get("version")) == (
                gpu_name, tensorrt_version)

        return sorted(names, key=lambda n: not built_here(n))

    @property
    def roles(self) -> dict[str, str]:
        """Each file's role (raw, model, fp16, int8, int8-cpu, engine, weights)."""
        return {n: str(e.get("role", "model")) for n, e in self.manifest["files"].items()}

    def stage(self, name: str) -> dict[str, Any]:
        """What stage ``name`` recorded (empty when it has not run)."""
        return self.manifest.get("stages", {}).get(name, {})

    def file(self, name: str) -> Path:
        """Path of a file recorded in the manifest; an unknown or missing one is a BundleError."""
        self.entry(name)
        path = self.path / name
        if not path.is_file():
            raise BundleError(f"{path}: listed in the manifest but missing")
        return path

    @property
    def files(self) -> list[str]:
        """Names of the files the manifest records, in the order they were added."""
        return list(self.manifest["files"])

    def onnx_files(self) -> list[str]:
        """Names of the ONNX files in the bundle."""
        return [name for name in self.files if name.endswith(".onnx")]

    def add_file(self, name: str, **info: Any) -> dict[str, Any]:
        """Record the file ``name`` (already in the directory): its size, sha256 and ``info`` (role, ...)."""
        path = self.path / name
        entry = {**info, "bytes": path.stat().st_size, "sha256": sha256_file(path)}
        self.manifest["files"][name] = entry
        return entry

    def check_file(self, name: str) -> Path:
        """Path of a recorded file whose sha256 still matches the manifest (else a BundleError)."""
        path = self.file(name)
        expected = self.entry(name).get("sha256")
        if expected and sha256_file(path) != expected:
            raise BundleError(f"{path}: sha256 differs from the manifest (file changed after it was recorded)")
        return path

    def record(self, stage: str, figures: dict[str, Any], key: str | None = None) -> None:
        """Store what a stage did and measured under ``stages[stage]`` (replacing an earlier record), or under
        ``stages[stage][key]`` beside the stage's other records."""
        if key is None:
            self.manifest["stages"][stage] = figures
        else:
            self.manifest["stages"].setdefault(stage, {})[key] = figures

    def save(self) -> Path:
        """Write ``manifest.json`` atomically."""
        path = self.path / MANIFEST
        try:
            atomic_write_json(path, self.manifest)
        except OSError as exc:
            raise BundleError(f"{path}: cannot write manifest ({exc.strerror or exc})") from None
        return path
