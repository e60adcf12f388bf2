"""What ``sk-deploy serve`` accepts: a bundle, or a model name whose cached export is reused while the weights
are the same; anything else, or a backend this machine lacks, is one line and exit 1 before a server starts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sk_deploy.bundle import Bundle, BundleError
from sk_deploy.machine import nvidia_driver_visible
from sk_deploy.service.target import resolve_target
from tests.test_cli import sk_deploy


def test_a_bundle_directory_is_served_as_it_is(small_bundle: Bundle) -> None:
    bundle, exported = resolve_target(str(small_bundle.path))
    assert (bundle.path, bundle.model_name, exported) == (small_bundle.path, "skresnet18", False)
    with pytest.raises(BundleError, match="apply to a model name"):
        resolve_target(str(small_bundle.path), pretrained=True)


def test_a_cached_export_with_the_same_weights_is_reused(small_bundle: Bundle, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(small_bundle.path, cache / "skresnet18")
    checkpoint = Path(small_bundle.manifest["model"]["weights"]["path"])
    exported: list[str] = []
    bundle, fresh = resolve_target("skresnet18", weights=checkpoint, cache=cache, progress=exported.append)
    assert (bundle.path, fresh) == (cache / "skresnet18", False) and not exported


@pytest.mark.parametrize(("args", "message"), [
    (["resnet50"], "'resnet50' is neither a bundle directory nor a registered model"),
    (["./no/such/bundle"], "not a bundle directory"),
])
def test_bad_targets_are_one_line(args: list[str], message: str) -> None:
    run = sk_deploy("serve", *args)
    assert run.returncode == 1 and message in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr


def test_a_backend_this_machine_lacks_is_one_line(small_bundle: Bundle) -> None:
    import importlib.util

    if importlib.util.find_spec("tensorrt") is not None:
        pytest.skip("tensorrt is installed here")
    run = sk_deploy("serve", str(small_bundle.path), "--backend", "tensorrt")
    assert run.returncode == 1 and run.stderr.startswith("error: TensorRT is not installed"), run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


@pytest.mark.skipif(nvidia_driver_visible(), reason="an NVIDIA driver is here: PyTorch is asked whether CUDA runs")
def test_serving_a_bundle_on_a_cpu_machine_imports_no_pytorch(small_bundle: Bundle) -> None:
    """What ``serve BUNDLE`` loads before it answers, on a machine with no NVIDIA driver: the target, the machine,
    the service and a Predictor on each CPU backend; PyTorch (2 to 3 s, 300 MB) is never imported."""
    probe = ("import sys\nfrom sk_deploy.service.target import resolve_target\nimport sk_deploy.service.server\n"
             f"from sk_deploy.runtime.predictor import Predictor\n"
             f"bundle, _ = resolve_target({str(small_bundle.path)!r})\n"
             "for backend in ('auto', 'ort-cpu', 'openvino'):\n"
             "    with Predictor(bundle, backend) as p:\n        p.predict(p.example(1))\n"
             "print('torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False", done.stdout
