"""Getting a mounted bundle ready to serve at a container's start (``sk-deploy prepare``, run by the image's
entrypoint before ``sk-deploy serve``).

The bundle is checked (manifest, every file's sha256: a half-copied volume fails here, in one line, not at the
first request). A TensorRT engine runs only on the GPU model and with the TensorRT version that built it, so an
image never carries one: when the container has a GPU and TensorRT and the bundle holds no engine for them, one
is built here, at first start. A read-only bundle (a ``:ro`` volume, KServe's ``/mnt/models``) is copied once
to a writable work directory for that; the copy, engine included, is found again at the next start when the
work directory is a persistent volume.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sk_deploy.backends import backend
from sk_deploy.bundle import MODEL_FILE, Bundle, BundleError, staging
from sk_deploy.engines.compat import fitting_engine as engine_for
from sk_deploy.errors import SkDeployError
from sk_deploy.machine import Machine, probe_machine
from sk_deploy.precisions import PRECISIONS, Precision
from sk_deploy.settings.base import defaults
from sk_deploy.settings.deploy import BUILD_MODES, PrepareSettings


class PrepareError(SkDeployError, RuntimeError):
    """A bundle that cannot be made ready to serve; the message is meant for a person."""


#: the command's defaults, from its settings model
PREPARE = defaults(PrepareSettings)


@dataclass(frozen=True)
class PrepareRequest:
    """What the entrypoint asks for: the mounted bundle, the precision to serve and whether to build an engine."""

    bundle: Path
    precision: str = PREPARE["precision"]
    build: str = PREPARE["build_engine"]
    work_dir: Path | None = None


@dataclass(frozen=True)
class Prepared:
    """The bundle directory to serve, the engine in it for this GPU (if any), whether it was built now, and why."""

    bundle: Path
    engine: str | None
    built: bool
    reason: str


def check_bundle(path: Path) -> Bundle:
    """Open the bundle and check every recorded file against its sha256."""
    if not path.exists():
        raise PrepareError(f"{path}: no bundle there; mount one (docker run -v /path/to/bundle:{path}:ro ...) or set "
                           "SK_BUNDLE to where it is")
    bundle = Bundle.open(path)
    if not bundle.has(MODEL_FILE):
        raise BundleError(f"{path}: the bundle has no model.onnx; export it with sk-deploy export")
    for name in bundle.files:
        bundle.check_file(name)
    return bundle


def fitting_engine(bundle: Bundle, precision: str, machine: Machine) -> str | None:
    """The bundle's engine of ``precision`` that runs with this machine's GPU and TensorRT, or None."""
    return engine_for(bundle, precision, machine)[0]


def work_copy(bundle: Bundle, work_dir: Path | None) -> Path:
    """A writable copy of a read-only bundle in ``work_dir``: an earlier copy of the same model.onnx is reused
    (with whatever engines it holds), anything else there is replaced."""
    if work_dir is None:
        raise PrepareError(f"{bundle.path} is read-only and no work directory is set: set SK_WORK_DIR (--work-dir) to "
                           "a writable volume for the engine")
    target = Path(work_dir) / "bundle"
    source_sha = bundle.entry(MODEL_FILE)["sha256"]
    try:
        earlier = Bundle.open(target)
        if earlier.has(MODEL_FILE) and earlier.entry(MODEL_FILE).get("sha256") == source_sha:
            return target
    except (BundleError, KeyError):
        pass
    with staging(target, force=True) as stage:
        shutil.copytree(bundle.path, stage, dirs_exist_ok=True)
    return target


def prepare(
    request: PrepareRequest, machine: Machine | None = None, progress: Callable[[str], None] = lambda message: None
) -> Prepared:
    """Check the bundle and, where this machine can use one, find or build its TensorRT engine."""
    if request.build not in BUILD_MODES:
        raise PrepareError(f"unknown engine build mode {request.build!r}; choose one of: {', '.join(BUILD_MODES)}")
    if request.precision not in PRECISIONS:
        raise PrepareError(f"unknown precision {request.precision!r}; choose one of: {', '.join(PRECISIONS)}")
    progress("checking the bundle")
    bundle = check_bundle(Path(request.bundle))
    machine = machine or probe_machine()
    bundle.graph(request.precision, "gpu" if machine.cuda else "cpu", " to serve")  # serve would fail without it
    if request.build == "never":
        return Prepared(bundle.path, None, False, "engine builds are off (never): the server uses what the bundle has")
    if request.precision not in backend("tensorrt").precisions:
        return Prepared(bundle.path, None, False, f"{request.precision} is not an engine precision "
                        f"({Precision(request.precision).facts.about}): no engine to build")
    if request.build == "always" and (not machine.cuda or machine.tensorrt_version is None):
        missing = "no CUDA GPU" if not machine.cuda else f"{machine.gpu_name} but no TensorRT"
        raise PrepareError(f"--build-engine always: cannot build a TensorRT engine here ({missing}); use auto or "
                           "never to serve with ONNX Runtime")
    if not machine.cuda:
        return Prepared(bundle.path, None, False, "no CUDA GPU: no engine to build, the server runs ONNX Runtime on "
                        "the CPU")
    if machine.tensorrt_version is None:
        return Prepared(bundle.path, None, False, f"{machine.gpu_name} but no TensorRT: no engine to build, the "
                        "server uses ONNX Runtime's CUDA provider or PyTorch")
    writable = os.access(bundle.path, os.W_OK | os.X_OK)
    if request.build == "auto":
        candidates = [bundle]
        if not writable and request.work_dir is not None and (Path(request.work_dir) / "bundle").is_dir():
            candidates.append(Bundle.open(work_copy(bundle, request.work_dir)))
        for candidate in candidates:
            found = fitting_engine(candidate, request.precision, machine)
            if found:
                return Prepared(candidate.path, found, False, f"{found} fits {machine.gpu_name} and TensorRT "
                                f"{machine.tensorrt_version}")
    target = bundle.path if writable else work_copy(bundle, request.work_dir)
    from sk_deploy.engines.tensorrt import BuildRequest, build_engine, check_request

    build = BuildRequest(bundle=target, precision=request.precision)
    check_request(build)
    progress(f"building a {request.precision} TensorRT engine for {machine.gpu_name} (minutes)")
    name, entry = build_engine(build, progress=progress)
    return Prepared(target, name, True, f"built {name} for {machine.gpu_name} with TensorRT "
                    f"{machine.tensorrt_version} in {entry['build_seconds']} s")
