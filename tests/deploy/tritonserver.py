"""A real Triton Inference Server for the suite: ``tritonserver`` from PyPI's ``nvidia-pytriton`` wheel (Triton
2.51 with the Python backend only), on the loopback, stopped when the block ends.

The wheel cannot be a plain dev dependency: its own dependencies pin ``tritonclient[grpc]`` (protobuf < 7, which
sk-deploy's gRPC stubs need) and numpy < 2, and pip has no per-requirement ``--no-deps``. So it is installed
without its dependencies (``pip install --no-deps --target``) into pytest's cache the first time a test needs it:
nothing of it is imported, only its server binary, libraries and Python stub run. Where that cannot be done
(offline, not Linux x86-64, a Python without a shared libpython or without a stub in the wheel) the tests skip,
saying why.

How it runs (what a person serving ``triton-repo --backend python`` output needs too):

- ``LD_LIBRARY_PATH``: the wheel's ``nvidia_pytriton.libs`` and the directory of this Python's libpython;
- a backend directory of our own (a temporary one, never the wheel's): ``python/`` with the wheel's
  ``libtriton_python.so`` and ``triton_python_backend_utils.py``, and this Python version's stub beside them;
- the stub embeds an *isolated* interpreter (``PYTHONPATH`` is ignored) named ``python3``, found on ``PATH``: so a
  small virtual environment goes first on ``PATH``, whose ``site-packages`` holds a ``.pth`` naming the project
  under test and this environment's ``site-packages``;
- the stub of Triton 2.51 is built for numpy 1 (with numpy 2 it reads tensors with the wrong strides), so where
  this environment has numpy 2, numpy 1.26 (installed the same way) comes first in that ``.pth``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import platform
import shutil
import site
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from .server import free_port, running_server

PYTRITON = "nvidia-pytriton==0.7.0"
"""Triton 2.51 (24.10): the server binary, the Python backend and its stubs for Python 3.8 to 3.13."""
STUB_NUMPY = "numpy==1.26.4"
"""What the 2.51 stub's environment takes instead of numpy 2."""
REPO_ROOT = Path(__file__).resolve().parents[2]
DEADLINE_S = 420.0  # three Python models import torch, onnxruntime and sk-deploy on a busy 2-core machine


@dataclass(frozen=True)
class TritonServer:
    """A running server: its ports on 127.0.0.1 and its process."""

    http_port: int
    grpc_port: int
    metrics_port: int
    process: subprocess.Popen[bytes]

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


def _pip_target(requirement: str, folder: Path) -> str | None:
    """``pip install --no-deps --target folder requirement`` (once: kept in ``folder``); None, or why not."""
    if (folder / ".complete").is_file():
        return None
    stage = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        done = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile",
                               "--disable-pip-version-check", "--target", str(stage), requirement],
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            lines = (done.stderr or done.stdout).strip().splitlines()
            return f"pip install --no-deps {requirement} failed: {lines[-1] if lines else done.returncode}"
        (stage / ".complete").write_text(requirement + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        os.replace(stage, folder)
        return None
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _installed_pytriton() -> Path | None:
    """The folder holding an installed ``pytriton`` package (pip install --no-deps nvidia-pytriton), if any."""
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))).parent
    return root if (root / "pytriton" / "tritonserver" / "bin" / "tritonserver").is_file() else None


def server_files(cache: Path) -> Path:
    """The folder with ``pytriton/tritonserver`` and ``nvidia_pytriton.libs``; skips, saying why, where the wheel
    cannot run here."""
    found = _server_files(cache)
    if isinstance(found, str):
        pytest.skip(found)
    return found


@functools.cache
def _server_files(cache: Path) -> Path | str:
    """``server_files``, or why not: asked once per session (pytest runs a skipping fixture again for each test)."""
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return (f"the {PYTRITON} wheel's tritonserver runs on Linux x86-64 only, not {sys.platform} "
                f"{platform.machine()}")
    if not sysconfig.get_config_var("Py_ENABLE_SHARED"):
        return "Triton's Python stub links libpython, and this Python is built without a shared libpython"
    root = _installed_pytriton()
    if root is None:
        root = cache / PYTRITON.replace("==", "-")
        why = _pip_target(PYTRITON, root)
        if why:
            return why
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    if not (root / "pytriton" / "tritonserver" / "python_backend_stubs" / version).is_dir():
        return f"{PYTRITON} has no Python backend stub for Python {version}"
    return root


def _stub_environment(folder: Path, cache: Path) -> Path:
    """A virtual environment for the stub's interpreter: numpy 1 where needed, the project, this environment."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True, capture_output=True)
    lines = []
    if int(np.__version__.split(".")[0]) >= 2:
        numpy1 = cache / STUB_NUMPY.replace("==", "-")
        why = _pip_target(STUB_NUMPY, numpy1)
        if why:
            pytest.skip(f"Triton 2.51's Python stub needs numpy<2 and {why}")
        lines.append(str(numpy1))
    lines.append(str(REPO_ROOT))
    site_dirs = dict.fromkeys(site.getsitepackages())  # a virtual environment's, and the base's where it sees them
    lines += [f"import site; site.addsitedir({directory!r})" for directory in site_dirs]
    purelib = Path(sysconfig.get_paths(vars={"base": str(folder), "platbase": str(folder)})["purelib"])
    (purelib / "sk_deploy_tests.pth").write_text("\n".join(lines) + "\n")
    return folder / "bin"


def _backends(root: Path, folder: Path) -> Path:
    """A backend directory: the wheel's Python backend with this Python version's stub beside it."""
    server = root / "pytriton" / "tritonserver"
    python = folder / "python"
    python.mkdir(parents=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(server / "backends" / "python" / name, python / name)
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    shutil.copy2(server / "python_backend_stubs" / version / "triton_python_backend_stub", python)
    return folder


@contextlib.contextmanager
def tritonserver(root: Path, repository: Path, load: Sequence[str], cache: Path) -> Iterator[TritonServer]:
    """``tritonserver`` of the wheel in ``root`` (``server_files``) on ``repository`` (explicit model control:
    ``load`` loaded at the start) until the block ends; yields once every model of ``load`` is ready."""
    with tempfile.TemporaryDirectory(prefix="sk-triton-") as scratch:
        folder = Path(scratch)
        path_first = _stub_environment(folder / "stub-env", cache)
        backends = _backends(root, folder / "backends")
        env = {**os.environ,
               "LD_LIBRARY_PATH": os.pathsep.join([str(root / "nvidia_pytriton.libs"),
                                                   str(sysconfig.get_config_var("LIBDIR"))]),
               "PATH": os.pathsep.join([str(path_first), os.environ.get("PATH", "")])}
        http, grpc, metrics = free_port(), free_port(), free_port()
        argv = [str(root / "pytriton" / "tritonserver" / "bin" / "tritonserver"),
                f"--model-repository={repository}", f"--backend-directory={backends}",
                "--model-control-mode=explicit", *[f"--load-model={name}" for name in load],
                "--http-address=127.0.0.1", f"--http-port={http}", "--grpc-address=127.0.0.1",
                f"--grpc-port={grpc}", "--metrics-address=127.0.0.1", f"--metrics-port={metrics}",
                "--allow-gpu-metrics=false", "--exit-timeout-secs=5"]
        with running_server(argv, http, env=env, deadline_s=DEADLINE_S, ready_path="/v2/health/ready") as process:
            yield TritonServer(http, grpc, metrics, process)
