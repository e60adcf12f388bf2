"""The sk-deploy command line, run as a user runs it: a real process, real images, exit codes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sk_deploy.models import list_models

ENV = {**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1"}


def sk_deploy(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the installed console script (falls back to ``python -m sk_deploy``)."""
    exe = shutil.which("sk-deploy")
    cmd = [exe] if exe else [sys.executable, "-m", "sk_deploy"]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=ENV, timeout=300)


def test_help_lists_commands() -> None:
    run = sk_deploy("--help")
    assert run.returncode == 0
    assert "models" in run.stdout and "predict" in run.stdout


def test_models_table() -> None:
    run = sk_deploy("models")
    assert run.returncode == 0, run.stderr
    for name in list_models():
        assert name in run.stdout
    sknet50 = next(line for line in run.stdout.splitlines() if " sknet50 " in line)
    assert "27.48M" in sknet50 and "4.46" in sknet50 and "timm/skresnext50_32x4d.ra_in1k" in sknet50
    assert "11.96M" in run.stdout and "28.09M" in run.stdout


def test_predict_real_photo(real_photo: Path) -> None:
    run = sk_deploy("predict", str(real_photo), "--model", "skresnet18", "--top-k", "3")
    assert run.returncode == 0, run.stderr
    assert str(real_photo) in run.stdout
    assert "probability" in run.stdout
    assert "random weights" in run.stderr


def test_predict_json_matches_pytorch(real_photo: Path, tmp_path: Path) -> None:
    """The CLI's top-5 on a real photo equals PyTorch's own on the same weights and preprocessing."""
    import json

    from safetensors.torch import save_file

    from sk_deploy.images import load_batch
    from sk_deploy.models import create_model, get_spec
    from sk_deploy.runtime.classify import softmax

    torch.manual_seed(7)
    model = create_model("skresnet18")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "w.safetensors")
    run = sk_deploy("predict", str(real_photo), "-m", "skresnet18", "-k", "5", "--json", "--device", "cpu",
                    "--weights", str(tmp_path / "w.safetensors"))
    assert run.returncode == 0, run.stderr
    [result] = json.loads(run.stdout)
    assert result["image"] == str(real_photo) and result["device"] == "cpu"
    with torch.no_grad():
        logits = model(torch.from_numpy(load_batch([real_photo], get_spec("skresnet18").preprocess))).numpy()
    probs = softmax(logits)[0]
    expected = probs.argsort()[::-1][:5].tolist()
    assert [p["index"] for p in result["predictions"]] == expected
    for p in result["predictions"]:
        assert p["probability"] == pytest.approx(probs[p["index"]], rel=1e-4)


def test_predict_several_generated_images(generated_jpeg: Path, tmp_path: Path) -> None:
    from .conftest import make_image

    png = make_image(tmp_path / "second.png", size=(200, 300), mode="L", seed=3)
    run = sk_deploy("predict", str(generated_jpeg), str(png), "-m", "skresnet18", "-k", "2", "--device", "cpu")
    assert run.returncode == 0, run.stderr
    assert "generated.jpg" in run.stdout and "second.png" in run.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.jpg"], "missing.jpg: no such file"),
        (["pyproject.toml"], "pyproject.toml: not an image"),
        (["IMG", "--model", "sknet51"], "unknown model 'sknet51'; known models: sknet26, sknet50"),
        (["IMG", "--weights", "nope.safetensors"], "nope.safetensors: no such checkpoint file"),
        (["IMG", "--device", "tpu"], "unknown device 'tpu'"),
    ],
)
def test_predict_errors_are_one_line_and_nonzero(args: list[str], message: str, generated_jpeg: Path) -> None:
    args = [str(generated_jpeg) if a == "IMG" else a for a in args]
    run = sk_deploy("predict", *args, "-m", "skresnet18") if "--model" not in args else sk_deploy("predict", *args)
    assert run.returncode == 1
    assert message in run.stderr
    assert "Traceback" not in run.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_predict_cuda_without_gpu(generated_jpeg: Path) -> None:
    run = sk_deploy("predict", str(generated_jpeg), "-m", "skresnet18", "--device", "cuda")
    assert run.returncode == 1
    assert "no CUDA GPU" in run.stderr


@pytest.mark.gpu
def test_predict_on_gpu(generated_jpeg: Path) -> None:
    run = sk_deploy("predict", str(generated_jpeg), "-m", "sknet50", "--device", "cuda")
    assert run.returncode == 0, run.stderr
    assert "cuda" in run.stdout


def test_random_weights_are_the_same_every_run_and_the_same_as_export(generated_jpeg: Path) -> None:
    """`predict --model` builds its random weights as export does (one seed, one helper): two runs give the same
    probabilities over all 1000 classes, equal to the network export would build."""
    import json

    from sk_deploy.images import load_batch
    from sk_deploy.models import get_spec
    from sk_deploy.models.reference import build_reference, describe_weights
    from sk_deploy.runtime.classify import softmax

    args = ("predict", str(generated_jpeg), "-m", "skresnet18", "-k", "1000", "--json", "--device", "cpu")
    first, second = (json.loads(sk_deploy(*args).stdout)[0]["predictions"] for _ in range(2))
    assert first == second
    net = build_reference("skresnet18", describe_weights())
    with torch.no_grad():
        logits = net(torch.from_numpy(load_batch([generated_jpeg], get_spec("skresnet18").preprocess))).numpy()
    probs = softmax(logits)[0]
    assert [p["index"] for p in first[:5]] == probs.argsort()[::-1][:5].tolist()
    assert max(abs(p["probability"] - probs[p["index"]]) for p in first) < 1e-6
