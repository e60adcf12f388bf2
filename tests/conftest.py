"""Shared fixtures: real photos from ../shared/data when present, generated images always."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def pytest_report_header(config: pytest.Config) -> list[str]:
    cuda = torch.cuda.is_available()
    return [
        f"torch {torch.__version__}, CUDA {'available' if cuda else 'not available'}",
        f"shared data: {SHARED_DATA if SHARED_DATA.is_dir() else 'absent (tests on real photos skip)'}",
    ]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


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
