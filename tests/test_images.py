"""Decoding and preprocessing on real and generated images."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from sk_deploy.images import ImageError, Preprocess, load_batch, open_image, resize_crop, to_tensor

from .conftest import make_image


@pytest.mark.parametrize("mode", ["RGB", "L", "CMYK", "RGBA", "P", "LA"])
def test_every_mode_becomes_rgb(tmp_path: Path, mode: str) -> None:
    suffix = {"CMYK": ".jpg"}.get(mode, ".png")
    img = open_image(make_image(tmp_path / f"x{suffix}", mode=mode))
    assert img.mode == "RGB" and img.size == (320, 240)


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    img = Image.new("RGB", (300, 200), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    img.save(tmp_path / "rotated.jpg", exif=exif)
    assert open_image(tmp_path / "rotated.jpg").size == (200, 300)


def test_resize_short_side_then_centre_crop() -> None:
    spec = Preprocess()
    wide = resize_crop(Image.new("RGB", (640, 480)), spec)
    tall = resize_crop(Image.new("RGB", (300, 1000)), spec)
    assert wide.size == tall.size == (224, 224)
    x = to_tensor(wide, spec)
    assert x.shape == (3, 224, 224) and x.dtype == np.float32
    # black normalises to -mean/std
    np.testing.assert_allclose(x[:, 0, 0], -np.array(spec.mean) / np.array(spec.std), rtol=1e-5)


def test_centre_crop_takes_the_centre() -> None:
    img = Image.new("RGB", (256, 512), (0, 0, 0))
    img.paste((255, 255, 255), (0, 192, 256, 320))  # a white band in the middle
    out = np.asarray(resize_crop(img, Preprocess(resize=256, crop=128)))
    assert out.min() == 255


def test_draft_mode_on_large_jpeg_keeps_result_close(tmp_path: Path) -> None:
    path = make_image(tmp_path / "big.jpg", size=(2000, 1500))
    spec = Preprocess()
    full = to_tensor(resize_crop(open_image(path), spec), spec)
    draft = to_tensor(resize_crop(open_image(path, min_size=spec.resize), spec), spec)
    assert np.abs(full - draft).mean() < 0.05


def test_real_photo_preprocesses(real_photo: Path) -> None:
    batch = load_batch([real_photo, real_photo.read_bytes()], Preprocess())
    assert batch.shape == (2, 3, 224, 224)
    np.testing.assert_allclose(batch[0], batch[1], atol=0.05)  # draft decode of the file vs full decode of bytes
    assert -2.2 < batch.min() < 0 < batch.max() < 2.7


def test_bad_inputs_raise_image_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such file"):
        open_image(tmp_path / "missing.jpg")
    with pytest.raises(ImageError, match="not a file"):
        open_image(tmp_path)
    with pytest.raises(ImageError, match="empty image"):
        open_image(b"")
    with pytest.raises(ImageError, match="not an image"):
        open_image(b"%PDF-1.4 definitely not a picture")
    buf = io.BytesIO()
    Image.new("RGB", (400, 400), (10, 200, 30)).save(buf, "PNG")
    with pytest.raises(ImageError, match="cannot decode"):
        open_image(buf.getvalue()[: len(buf.getvalue()) // 2])


def test_decompression_bomb_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = make_image(tmp_path / "x.png", size=(400, 300))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # Pillow errors past twice this
    with pytest.raises(ImageError, match="too many pixels"):
        open_image(path)


def test_preprocess_validation() -> None:
    with pytest.raises(ValueError, match="interpolation"):
        Preprocess(interpolation="lanczos9")
    with pytest.raises(ValueError, match="crop"):
        Preprocess(resize=200, crop=224)
    assert Preprocess().to_dict()["layout"] == "NCHW"
