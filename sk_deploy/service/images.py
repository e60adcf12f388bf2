"""Pictures from HTTP bodies to the array the bundle's model takes, decoded in a thread pool.

Decoding itself is ``sk_deploy.images.load_picture`` (Pillow, draft mode for large JPEGs, EXIF orientation, greyscale /
CMYK / palette / alpha to RGB, the bundle's resize and centre crop); this module adds what a server needs: a
pixel and aspect-ratio limits checked from the header, before decoding (the refusal names the option that
sets the limit), and a pool of threads so the event loop never decodes.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from sk_deploy.images import ImageLimitError, Preprocess, load_picture

_OPTIONS = {"max_pixels": "--max-pixels", "max_aspect": "--max-aspect-ratio"}


@dataclass(frozen=True)
class PictureForm:
    """What one picture becomes: the bundle's preprocessing, and whether the graph takes uint8 NHWC crops
    (preprocessing fused into the graph) or float32 NCHW normalised arrays."""

    preprocess: Preprocess
    uint8_nhwc: bool
    max_pixels: int
    max_aspect: float

    def decode(self, data: bytes) -> np.ndarray:
        """One picture's bytes as the model's input item (no batch axis); an ImageError if it is not one."""
        try:
            return load_picture(data, self.preprocess, self.uint8_nhwc, self.max_pixels, self.max_aspect)
        except ImageLimitError as exc:
            raise ImageLimitError(f"{exc} (sk-deploy serve {_OPTIONS[exc.limit]})", exc.limit) from None


class Decoder:
    """Decodes pictures on a pool of worker threads (Pillow releases the GIL while it decodes and resizes)."""

    def __init__(self, form: PictureForm, threads: int) -> None:
        self.form = form
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="decode")

    async def decode(self, data: bytes) -> np.ndarray:
        """``form.decode(data)`` on the pool, awaited from the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, self.form.decode, data)

    def close(self) -> None:
        """Stop the pool's threads (pending decodes finish first)."""
        self._pool.shutdown(wait=True)
