"""Calibration data: a folder of real photos, read with the bundle's preprocessing, in a fixed order."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sk_deploy.errors import SkDeployError
from sk_deploy.images import ImageError, Preprocess, find_images, load_batch


class CalibrationError(SkDeployError, ValueError):
    """A calibration folder that cannot serve: missing, empty, or with no readable image."""


def list_images(folder: str | Path) -> list[Path]:
    """Picture files in ``folder`` and below it, sorted; a missing or picture-less folder is an error."""
    try:
        return find_images(folder)
    except ImageError as exc:
        raise CalibrationError(str(exc)) from None


@dataclass(frozen=True)
class ImageSplit:
    """Disjoint calibration and held-out images."""

    calibration: list[Path]
    holdout: list[Path]


def split_images(files: Sequence[Path], calib_size: int, holdout_size: int, seed: int = 0) -> ImageSplit:
    """A deterministic shuffle of ``files``: the first ``calib_size`` calibrate, the next ``holdout_size``
    measure accuracy, so the figures are never taken on the images that set the ranges."""
    if calib_size < 1:
        raise CalibrationError("calibration needs at least one image")
    order = list(files)
    random.Random(seed).shuffle(order)
    calibration = order[:calib_size]
    return ImageSplit(calibration, order[len(calibration): len(calibration) + holdout_size])


class ImageBatches:
    """Batches of preprocessed images from a list of files; unreadable files are skipped and counted.

    Also an ONNX Runtime ``CalibrationDataReader`` (``get_next`` / ``rewind``), so it feeds
    ``onnxruntime.quantization`` directly.
    """

    def __init__(
        self,
        files: Sequence[Path | bytes],
        input_name: str,
        spec: Preprocess,
        batch_size: int = 8,
        uint8_nhwc: bool = False,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.files = list(files)
        self.input_name = input_name
        self.spec = spec
        self.batch_size = batch_size
        self.uint8_nhwc = uint8_nhwc
        self.on_batch = on_batch
        self.skipped: list[tuple[Path | bytes, str]] = []
        self.used = 0
        self._iter: Iterator[dict[str, np.ndarray]] | None = None

    def arrays(self) -> Iterator[np.ndarray]:
        """The batches as arrays, in file order; resets the skipped/used counts."""
        self.skipped, self.used = [], 0
        for start in range(0, len(self.files), self.batch_size):
            arrays = []
            chunk = self.files[start: start + self.batch_size]
            for path in chunk:
                try:
                    arrays.append(load_batch([path], self.spec, self.uint8_nhwc)[0])
                except ImageError as exc:
                    self.skipped.append((path, str(exc)))
            if self.on_batch:
                self.on_batch(len(chunk))
            if arrays:
                self.used += len(arrays)
                yield np.stack(arrays)
        if self.used == 0:
            raise CalibrationError(
                f"none of the {len(self.files)} images could be read (first error: {self.skipped[0][1]})"
                if self.skipped else "no images to read"
            )

    # onnxruntime.quantization.CalibrationDataReader protocol: feeds, one batch each
    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for batch in self.arrays():
            yield {self.input_name: batch}

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next batch as an ONNX Runtime feed, or None at the end."""
        if self._iter is None:
            self._iter = iter(self)
        return next(self._iter, None)

    def rewind(self) -> None:
        """Start again from the first file."""
        self._iter = None
