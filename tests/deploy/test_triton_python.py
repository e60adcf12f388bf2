"""The ensemble's decoding step outside Triton: sk_deploy.images on real and generated pictures, within the limits
its config's parameters set, each refusal naming the parameter (the served path is in test_tritonserver.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sk_deploy.bundle import Bundle
from sk_deploy.deploy.triton_python import PictureLimits
from sk_deploy.images import ImageError, load_picture

from ..conftest import make_image

LIMITS = PictureLimits(max_pixels=40_000_000, max_aspect=32.0, max_bytes=16 << 20)


def test_a_picture_becomes_what_the_bundle_takes(small_bundle: Bundle, fused_bundle: Bundle,
                                                 real_photo: Path) -> None:
    data = real_photo.read_bytes()
    item = LIMITS.decode(data, small_bundle.preprocess, uint8_nhwc=False)
    assert item.dtype == np.float32 and item.shape == (3, 64, 64)
    np.testing.assert_array_equal(item, load_picture(real_photo, small_bundle.preprocess))
    crop = LIMITS.decode(data, fused_bundle.preprocess, uint8_nhwc=True)
    assert crop.dtype == np.uint8 and crop.shape == (64, 64, 3)


@pytest.mark.parametrize(("limits", "size", "message"), [
    (PictureLimits(40_000_000, 32.0, 1000), (320, 240), r"\d+ bytes, the limit is 1000 \(parameter max_bytes\)"),
    (PictureLimits(10_000, 32.0, 16 << 20), (320, 240), r"too many pixels \(320x240 = 76800, the limit is 10000\) "
                                                        r"\(parameter max_pixels\)"),
    (PictureLimits(40_000_000, 2.0, 16 << 20), (600, 100), r"aspect ratio too large .* \(parameter max_aspect\)"),
])
def test_limits_refuse_naming_their_parameter(small_bundle: Bundle, tmp_path: Path, limits: PictureLimits,
                                              size: tuple[int, int], message: str) -> None:
    data = make_image(tmp_path / "p.png", size=size).read_bytes()
    with pytest.raises(ImageError, match=message):
        limits.decode(data, small_bundle.preprocess, uint8_nhwc=False)
