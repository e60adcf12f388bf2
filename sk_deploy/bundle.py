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

MANIFEST = "manifest.json"
FORMAT = "sk-deploy-bundle"
FORMAT_VERSION = 1
_TOOLS = ("sk-deploy", "torch", "onnx", "onnxruntime", "onnxscript", "onnx-ir", "onnxslim", "numpy")


class BundleError(RuntimeError):
    """A bundle that cannot be created, read or updated; the message is meant for a person."""


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


def atomic_write_json(path: str | Path, document: Any) -> None:
    """Write ``document`` as indented JSON, atomically."""
    atomic_write_bytes(path, (json.dumps(document, indent=2, sort_keys=False) + "\n").encode("utf-8"))


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

    @property
    def model_name(self) -> str:
        """The registered model the bundle was exported from."""
        return str(self.manifest["model"]["name"])

    def file(self, name: str) -> Path:
        """Path of a file recorded in the manifest; an unknown or missing one is a BundleError."""
        if name not in self.manifest["files"]:
            raise BundleError(f"{self.path}: bundle has no file {name!r} (has: {', '.join(self.files) or 'none'})")
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
        expected = self.manifest["files"][name].get("sha256")
        if expected and sha256_file(path) != expected:
            raise BundleError(f"{path}: sha256 differs from the manifest (file changed after it was recorded)")
        return path

    def record(self, stage: str, figures: dict[str, Any]) -> None:
        """Store what a stage did and measured under ``stages[stage]`` (replacing an earlier record)."""
        self.manifest["stages"][stage] = figures

    def save(self) -> Path:
        """Write ``manifest.json`` atomically."""
        path = self.path / MANIFEST
        try:
            atomic_write_json(path, self.manifest)
        except OSError as exc:
            raise BundleError(f"{path}: cannot write manifest ({exc.strerror or exc})") from None
        return path
