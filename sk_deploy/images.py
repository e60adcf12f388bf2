"""Image decoding and the preprocessing every stage shares: resize, centre crop, scale, normalise."""

from __future__ import annotations

import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from sk_deploy.errors import SkDeployError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


#: The limits a server puts on one picture by default (``sk-deploy serve``, the Triton ensemble's decoding step): pixels
#: and aspect ratio as declared by its header, checked before decoding; the encoded size, checked before reading it.
MAX_PIXELS = 40_000_000
MAX_ASPECT = 32.0
MAX_PICTURE_BYTES = 16 * 1024 * 1024

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


class ImageError(SkDeployError, ValueError):
    """An input that is not a decodable image (missing, empty, truncated, not an image, too many pixels)."""


class ImageLimitError(ImageError):
    """A picture refused from its header for passing a limit: ``limit`` is ``"max_pixels"`` or ``"max_aspect"``."""

    def __init__(self, message: str, limit: str) -> None:
        super().__init__(message)
        self.limit = limit


@dataclass(frozen=True)
class Preprocess:
    """How a network wants its pictures: short side resized to ``resize``, centre crop ``crop`` x ``crop``,
    scaled to [0, 1], normalised with ``mean`` / ``std``, channels first (NCHW).

    The default is timm's for the checkpoints here: 224 / 0.875 = 256, bicubic, crop 224, ImageNet stats.
    """

    resize: int = 256
    crop: int = 224
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __post_init__(self) -> None:
        if self.interpolation not in _RESAMPLE:
            raise ValueError(f"interpolation must be one of {sorted(_RESAMPLE)}, got {self.interpolation!r}")
        if self.crop > self.resize:
            raise ValueError(f"crop ({self.crop}) larger than resize ({self.resize})")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready form, as written into a bundle's manifest."""
        return {**asdict(self), "mean": list(self.mean), "std": list(self.std), "layout": "NCHW"}


def find_images(folder: str | Path) -> list[Path]:
    """Picture files (by suffix, any case) in ``folder`` and below it, sorted by path."""
    folder = Path(folder)
    if not folder.exists():
        raise ImageError(f"{folder}: no such directory")
    if not folder.is_dir():
        raise ImageError(f"{folder}: not a directory")
    found = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise ImageError(f"{folder}: no pictures found ({', '.join(IMAGE_SUFFIXES)})")
    return found


def open_image(source: str | Path | bytes, min_size: int | None = None, max_pixels: int | None = None,
               max_aspect: float | None = None) -> Image.Image:
    """Decode a JPEG/PNG/WebP/... file or bytes into an upright RGB image.

    EXIF orientation is applied; greyscale, palette, CMYK and alpha images become RGB. With ``min_size``,
    large JPEGs are decoded in draft mode at the smallest scale whose short side is still >= 2 * min_size,
    which keeps the resize's result while decoding far fewer pixels. With ``max_pixels``, a picture whose
    header declares more pixels is refused before any of it is decoded (a decompression bomb costs nothing);
    with ``max_aspect``, so is one whose long side is more than ``max_aspect`` times its short side.
    """
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    if isinstance(source, bytes):
        if not source:
            raise ImageError("empty image: no bytes to decode")
        stream: Any = io.BytesIO(source)
    else:
        path = Path(source)
        if not path.exists():
            raise ImageError(f"{path}: no such file")
        if not path.is_file():
            raise ImageError(f"{path}: not a file")
        stream = path
    try:
        with Image.open(stream) as img:
            _check_limits(name, img.width, img.height, max_pixels, max_aspect)
            if min_size and img.format == "JPEG":
                img.draft("RGB", (2 * min_size, 2 * min_size))
            img = ImageOps.exif_transpose(img)
            img.load()
            return _to_rgb(img)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{name}: too many pixels ({exc})") from None
    except UnidentifiedImageError:
        raise ImageError(f"{name}: not an image (no decoder recognises it)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{name}: cannot decode image ({exc})") from None


def _check_limits(name: str, width: int, height: int, max_pixels: int | None, max_aspect: float | None) -> None:
    if max_pixels and width * height > max_pixels:
        raise ImageLimitError(f"{name}: too many pixels ({width}x{height} = {width * height}, the limit is "
                              f"{max_pixels})", "max_pixels")
    if max_aspect and max(width, height) > max_aspect * max(1, min(width, height)):
        raise ImageLimitError(f"{name}: aspect ratio too large ({width}x{height}, "
                              f"{max(width, height) / max(1, min(width, height)):g}:1, the limit is {max_aspect:g}:1)",
                              "max_aspect")


def _to_rgb(img: Image.Image) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def _resized_size(width: int, height: int, spec: Preprocess) -> tuple[int, int]:
    """The size after resizing the short side to ``spec.resize`` (torchvision's Resize(int) rounding)."""
    if width <= height:
        return spec.resize, int(spec.resize * height / width)
    return int(spec.resize * width / height), spec.resize


def crop_box(width: int, height: int, spec: Preprocess) -> tuple[float, float, float, float]:
    """The region of a ``width`` x ``height`` picture that survives ``spec``'s resize and centre crop, in the
    picture's own pixel coordinates (planned from the size alone, before any pixel is touched)."""
    new_w, new_h = _resized_size(width, height, spec)
    left, top = round((new_w - spec.crop) / 2.0), round((new_h - spec.crop) / 2.0)
    sx, sy = width / new_w, height / new_h
    return left * sx, top * sy, (left + spec.crop) * sx, (top + spec.crop) * sy


def resize_crop(img: Image.Image, spec: Preprocess) -> Image.Image:
    """Resize the short side to ``spec.resize`` (as torchvision's Resize(int)), then centre crop.

    A long, thin picture is not resized whole: only the region that survives the crop is resampled
    (``resize(box=...)``, the same filter taps to within float rounding), so the memory is bounded by
    ``_WHOLE_RESIZE_LIMIT`` times the resize's square, whatever the aspect ratio. Ordinary pictures take the
    exact resize-then-crop path.
    """
    new_w, new_h = _resized_size(*img.size, spec)
    if new_w * new_h > _WHOLE_RESIZE_LIMIT * spec.resize * spec.resize:
        return img.resize((spec.crop, spec.crop), _RESAMPLE[spec.interpolation], box=crop_box(*img.size, spec))
    if (new_w, new_h) != img.size:
        img = img.resize((new_w, new_h), _RESAMPLE[spec.interpolation])
    left, top = round((new_w - spec.crop) / 2.0), round((new_h - spec.crop) / 2.0)
    return img.crop((left, top, left + spec.crop, top + spec.crop))


_WHOLE_RESIZE_LIMIT = 4
"""Pictures whose resized whole would exceed this many ``resize`` x ``resize`` squares resample only the crop."""


def to_tensor(img: Image.Image, spec: Preprocess) -> np.ndarray:
    """RGB image -> float32 array (3, H, W), scaled to [0, 1] and normalised."""
    array = np.asarray(img, dtype=np.float32) / 255.0
    array = (array - np.asarray(spec.mean, dtype=np.float32)) / np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(array.transpose(2, 0, 1))


def load_picture(source: str | Path | bytes, spec: Preprocess, uint8_nhwc: bool = False,
                 max_pixels: int | None = None, max_aspect: float | None = None) -> np.ndarray:
    """Decode and preprocess one image: float32 (3, H, W) normalised, or (``uint8_nhwc``) the uint8 (H, W, 3)
    crop that a graph with fused preprocessing takes. ``max_pixels`` and ``max_aspect`` as in ``open_image``."""
    crop = resize_crop(open_image(source, spec.resize, max_pixels, max_aspect), spec)
    return np.asarray(crop, dtype=np.uint8) if uint8_nhwc else to_tensor(crop, spec)


def load_batch(sources: list[str | Path | bytes], spec: Preprocess, uint8_nhwc: bool = False) -> np.ndarray:
    """Decode and preprocess images into one batch: float32 NCHW normalised, or (``uint8_nhwc``) the uint8
    NHWC crops that a graph with fused preprocessing takes."""
    return np.stack([load_picture(s, spec, uint8_nhwc) for s in sources])
