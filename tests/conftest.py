"""Shared fixtures: real photos from ../shared/data when present, generated images always."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sk_deploy.bundle import Bundle
from tests.bundles import BundleCache
from tests.servers import ServerProcess, served

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


MACHINE_CPUS = frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else frozenset()


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, each worker, and the commands and servers it starts, keeps to its own share of the CPUs:
    OpenVINO and sk-deploy's ONNX Runtime sessions size their thread pools to it (``machine.runtime_threads``), so
    two workers do not spin threads against each other on the same cores (docs/tests.md: the suite on two cores
    took 574 to 615 s before, 423 s after)."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER"), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    cpus = sorted(MACHINE_CPUS)
    if worker and 1 < count <= len(cpus):
        share = cpus[int(worker.removeprefix("gw")) % count :: count]
        os.sched_setaffinity(0, share)
        torch.set_num_threads(len(share))


@pytest.fixture()
def every_cpu() -> Iterator[set[int]]:
    """The test runs on all the machine's CPUs, not its worker's share (a test of several instances sharing them)."""
    if not MACHINE_CPUS:
        pytest.skip("this system has no CPU affinity call (Linux has)")
    share = os.sched_getaffinity(0)
    os.sched_setaffinity(0, MACHINE_CPUS)
    yield set(MACHINE_CPUS)
    os.sched_setaffinity(0, share)


def pytest_report_header(config: pytest.Config) -> list[str]:
    cuda = torch.cuda.is_available()
    return [
        f"torch {torch.__version__}, CUDA {'available' if cuda else 'not available'}",
        f"shared data: {SHARED_DATA if SHARED_DATA.is_dir() else 'absent (tests on real photos skip)'}",
    ]


def _tensorrt_missing() -> str | None:
    """Why TensorRT tests cannot run here, or None when they can."""
    if not torch.cuda.is_available():
        return "needs a CUDA GPU"
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError):
        return "needs the tensorrt package (NVIDIA's index)"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    no_gpu = None if torch.cuda.is_available() else "needs a CUDA GPU"
    no_trt = _tensorrt_missing() if any(item.get_closest_marker("tensorrt") for item in items) else None
    for item in items:
        reason = no_trt if item.get_closest_marker("tensorrt") else no_gpu if item.get_closest_marker("gpu") else None
        if reason:
            item.add_marker(pytest.mark.skip(reason=reason))


HARDWARE = "hardware_marked"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if item.get_closest_marker("gpu") or item.get_closest_marker("tensorrt"):
        # a user property, not an attribute: pytest-xdist's workers send reports to the controller serialized
        report.user_properties.append((HARDWARE, True))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    reports = [r for rs in terminalreporter.stats.values() for r in rs if (HARDWARE, True) in
               getattr(r, "user_properties", ())]
    skipped = sum(1 for r in reports if r.when == "setup" and r.skipped)
    ran = sum(1 for r in reports if r.when == "call")
    terminalreporter.write_line(
        f"GPU / TensorRT tests: {skipped} skipped on this machine (no CUDA GPU or no tensorrt), {ran} ran"
    )


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder of real ImageNet photos beside the project; tests that need it skip without it."""
    if not (SHARED_DATA / "imagenet-samples").is_dir():
        pytest.skip(f"real photos not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def real_photo(shared_data: Path) -> Path:
    """A full-size real JPEG (a tench, class 0)."""
    return shared_data / "imagenet-samples" / "n01440764_tench.JPEG"


def make_image(path: Path, size: tuple[int, int] = (320, 240), mode: str = "RGB", seed: int = 0) -> Path:
    """Write a generated picture (gradients and a disc, not noise) in the format the suffix names."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    disc = ((xx - w * 0.6) ** 2 + (yy - h * 0.4) ** 2) < (min(w, h) * 0.25) ** 2
    rgb = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1), np.where(disc, 230, 40)], axis=-1)
    rgb = np.clip(rgb + rng.integers(-8, 8, rgb.shape), 0, 255).astype(np.uint8)
    Image.fromarray(rgb, "RGB").convert(mode).save(path)
    return path


@pytest.fixture()
def generated_jpeg(tmp_path: Path) -> Path:
    """A generated 320x240 JPEG."""
    return make_image(tmp_path / "generated.jpg")


@pytest.fixture(scope="session")
def server(small_bundle: Bundle) -> Iterator[ServerProcess]:
    """One real ``sk-deploy serve`` for the session, for the tests that need a server but no settings of their own
    (the service tests, tritonclient's, bench-http's table): the small skresnet18 bundle on ort-cpu (what the
    tests compare against; openvino has its own server in test_openvino_serve.py) with default batching, a 1 MB
    body limit and a 1 megapixel limit (so the size and decompression-bomb refusals are cheap to provoke)."""
    with served(small_bundle.path, "--backend", "ort-cpu", "--max-body-mb", "1", "--max-pixels", "1000000") as process:
        yield process


@pytest.fixture(scope="session")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> BundleCache:
    """Realistic bundles shared by the runtime, service and deployment tests, and by pytest-xdist's workers (in the
    run's common temporary folder): each is exported once per run."""
    base = tmp_path_factory.getbasetemp()
    worker = os.environ.get("PYTEST_XDIST_WORKER")  # set in a worker; read here so -p no:xdist works as well
    return BundleCache((base.parent if worker else base) / "bundles")


@pytest.fixture(scope="session")
def small_bundle(bundles: BundleCache) -> Bundle:
    """skresnet18 at 64x64 with realistic activations (float32 NCHW input)."""
    return bundles.get("skresnet18")


@pytest.fixture(scope="session")
def fused_bundle(bundles: BundleCache) -> Bundle:
    """skresnet18 at 64x64 with preprocessing fused into the graph (uint8 NHWC input)."""
    return bundles.get("skresnet18", fuse_preprocess=True)
