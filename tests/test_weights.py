"""Checkpoints: safetensors and torch files, wrappers and prefixes, mismatches, the hub through its cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from sk_deploy.models import create_model
from sk_deploy.models.weights import (
    WeightsError,
    build_model,
    download_pretrained,
    load_pretrained,
    load_weights,
    read_state_dict,
)

NAME = "skresnet18"


@pytest.fixture(scope="module")
def trained() -> torch.nn.Module:
    """A model whose weights differ from a fresh one's (stands in for a trained checkpoint)."""
    torch.manual_seed(1)
    model = create_model(NAME)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.01)
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
    return model


def _same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.equal(a(x), b(x))


def test_safetensors_roundtrip(tmp_path: Path, trained: torch.nn.Module) -> None:
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, path)
    fresh = create_model(NAME)
    assert not _same_outputs(fresh, trained)
    assert _same_outputs(load_weights(fresh, path), trained)


@pytest.mark.parametrize(
    ("suffix", "wrap"),
    [
        (".pth", lambda sd: sd),
        (".pt", lambda sd: {"state_dict": sd, "epoch": 90}),
        (".bin", lambda sd: {"model": {f"module.{k}": v for k, v in sd.items()}, "optimizer": {}}),
        (".pth", lambda sd: {"state_dict": {f"_orig_mod.{k}": v for k, v in sd.items()}}),
    ],
)
def test_torch_checkpoints_are_unwrapped(tmp_path: Path, trained: torch.nn.Module, suffix, wrap) -> None:
    path = tmp_path / f"ckpt{suffix}"
    torch.save(wrap(trained.state_dict()), path)
    assert _same_outputs(load_weights(create_model(NAME), path), trained)


def test_missing_num_batches_tracked_is_accepted(tmp_path: Path, trained: torch.nn.Module) -> None:
    sd = {k: v for k, v in trained.state_dict().items() if not k.endswith("num_batches_tracked")}
    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "m.safetensors")
    assert _same_outputs(load_weights(create_model(NAME), tmp_path / "m.safetensors"), trained)


def test_mismatch_names_missing_unexpected_and_misshaped_keys(tmp_path: Path, trained: torch.nn.Module) -> None:
    sd = dict(trained.state_dict())
    del sd["layer2.0.conv1.attn.fc_select.weight"]
    sd["head.extra.weight"] = torch.zeros(3)
    sd["fc.weight"] = torch.zeros(10, 512)
    path = tmp_path / "bad.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, path)
    with pytest.raises(WeightsError) as info:
        load_weights(create_model(NAME), path)
    message = str(info.value)
    assert "1 missing: layer2.0.conv1.attn.fc_select.weight" in message
    assert "1 unexpected: head.extra.weight" in message
    assert "1 mis-shaped: fc.weight (10, 512) != (1000, 512)" in message


def test_wrong_model_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sknet.safetensors"
    save_file({k: v.contiguous() for k, v in create_model("sknet26").state_dict().items()}, path)
    with pytest.raises(WeightsError, match=r"does not fit ResNet: \d+ missing: .*unexpected"):
        load_weights(create_model(NAME), path)


class NotATensor:
    pass


def test_pickled_objects_are_never_unpickled(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"x": torch.zeros(1)}, "obj": NotATensor()}, path)
    with pytest.raises(WeightsError, match="cannot read checkpoint"):
        read_state_dict(path)


def test_unreadable_and_unknown_files(tmp_path: Path) -> None:
    with pytest.raises(WeightsError, match="no such checkpoint"):
        read_state_dict(tmp_path / "absent.safetensors")
    (tmp_path / "w.onnx").write_bytes(b"x")
    with pytest.raises(WeightsError, match=r"unknown checkpoint type '\.onnx'"):
        read_state_dict(tmp_path / "w.onnx")
    (tmp_path / "corrupt.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="cannot read checkpoint"):
        read_state_dict(tmp_path / "corrupt.safetensors")


# ---- the hub: huggingface_hub's real download code, served from a local cache laid out as the hub's ----

REVISION = "0123456789abcdef0123456789abcdef01234567"


def make_hub_cache(root: Path, repo_id: str, state_dict: dict[str, torch.Tensor]) -> Path:
    """Lay out ``root`` as huggingface_hub's cache holding ``repo_id``'s model.safetensors."""
    repo = root / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state_dict.items()}, snapshot / "model.safetensors")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    return root


@pytest.fixture()
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)


def test_pretrained_loads_from_hub_cache(tmp_path: Path, trained: torch.nn.Module, offline: None) -> None:
    cache = make_hub_cache(tmp_path / "hub", "timm/skresnet18.ra_in1k", trained.state_dict())
    path = download_pretrained(NAME, cache_dir=cache)
    assert path.name == "model.safetensors" and REVISION in str(path)
    assert _same_outputs(load_pretrained(create_model(NAME), NAME, cache_dir=cache), trained)


def test_offline_without_cache_is_one_clear_line(tmp_path: Path, offline: None) -> None:
    with pytest.raises(WeightsError) as info:
        download_pretrained(NAME, cache_dir=tmp_path / "empty")
    message = str(info.value)
    assert "\n" not in message
    assert "timm/skresnet18.ra_in1k" in message and "--weights PATH" in message


def test_model_without_hub_checkpoint() -> None:
    with pytest.raises(WeightsError, match="sknet26 has no pretrained checkpoint"):
        download_pretrained("sknet26")
    with pytest.raises(WeightsError, match="either a weights file or pretrained"):
        build_model(NAME, weights="x.safetensors", pretrained=True)


def test_cli_predict_pretrained_from_hub_cache(tmp_path: Path, trained: torch.nn.Module, generated_jpeg: Path):
    cache = make_hub_cache(tmp_path / "hub", "timm/skresnet18.ra_in1k", trained.state_dict())
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(cache), "COLUMNS": "200"}
    run = subprocess.run(
        [sys.executable, "-m", "sk_deploy", "predict", str(generated_jpeg), "-m", NAME, "--pretrained", "-k", "3"],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert run.returncode == 0, run.stderr
    assert "random weights" not in run.stderr
    empty = {**env, "HF_HUB_CACHE": str(tmp_path / "nothing")}
    run = subprocess.run(
        [sys.executable, "-m", "sk_deploy", "predict", str(generated_jpeg), "-m", NAME, "--pretrained"],
        capture_output=True, text=True, env=empty, timeout=300,
    )
    assert run.returncode == 1
    assert "cannot get timm/skresnet18.ra_in1k from the Hugging Face hub" in run.stderr
    assert "Traceback" not in run.stderr
