"""What runs inside Triton's Python backend for ``sk-deploy triton-repo --backend python`` and ``--ensemble``.

A repository's ``1/model.py`` is one line that imports a class of this module as ``TritonPythonModel``:

- ``ClassifierModel``: the bundle copied to ``1/bundle`` through sk-deploy's Predictor (the backend and precision
  of the config's ``runtime`` and ``precision`` parameters; ``auto`` picks on the serving machine). Triton's
  dynamic batcher hands it several requests at once: they run as one batch, and each gets its rows back.
- ``PictureModel``: the ensemble's first step. Encoded pictures (BYTES, one per batch item) through
  ``sk_deploy.images`` (the bundle's resize, crop and normalisation, the limits on pixels, aspect ratio and bytes
  from the config's parameters) into the array the model takes. A picture that cannot be used fails its own
  request, with a message naming the picture and the problem; the other requests of the batch go on.

``triton_python_backend_utils`` exists only inside Triton's Python stub, so it is imported there, at
``initialize``. The stub of Triton 2.51 (24.10) and older is built for numpy 1: its environment needs numpy<2.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sk_deploy.images import ImageError, ImageLimitError, Preprocess, load_picture

BUNDLE_DIR = "bundle"
"""Where ``triton-repo --backend python`` copies the bundle, inside the version directory."""


def parameters(config: dict[str, Any]) -> dict[str, str]:
    """The string parameters of a Triton model config (as the Python backend hands it over, parsed JSON)."""
    return {key: value["string_value"] for key, value in config.get("parameters", {}).items()}


def _log(message: str) -> None:
    import triton_python_backend_utils as pb_utils

    pb_utils.Logger.log_info(message)


def _error_response(message: str, invalid_input: bool = False) -> Any:
    """A response that fails its request: Triton's INVALID_ARG (HTTP 400) for an input the client got wrong, else
    INTERNAL (500)."""
    import triton_python_backend_utils as pb_utils

    code = pb_utils.TritonError.INVALID_ARG if invalid_input else pb_utils.TritonError.INTERNAL
    return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message, code))


class ClassifierModel:
    """The bundle's classifier through the Predictor, one batch per call of ``execute``."""

    def initialize(self, args: dict[str, str]) -> None:
        """Open the Predictor on the bundle beside this version, as the config's parameters say."""
        from sk_deploy.runtime.predictor import Predictor

        config = json.loads(args["model_config"])
        chosen = parameters(config)
        bundle = Path(args["model_repository"]) / args["model_version"] / BUNDLE_DIR
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]
        self.predictor = Predictor(bundle, chosen["runtime"], chosen["precision"])
        _log(f"{config['name']}: {self.predictor.description} ({self.predictor.reason})")

    def execute(self, requests: list[Any]) -> list[Any]:
        """One response per request: the logits of its rows, from one run of the whole batch."""
        import triton_python_backend_utils as pb_utils

        arrays = [pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy() for request in requests]
        try:
            logits = self.predictor.predict(np.concatenate(arrays) if len(arrays) > 1 else arrays[0])
        except Exception as exc:  # a failing run fails each request of the batch, with the reason
            return [_error_response(f"{self.predictor.backend} failed: {exc}") for _ in requests]
        bounds = np.cumsum([len(array) for array in arrays])[:-1]
        return [pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output_name, part)])
                for part in np.split(logits, bounds)]

    def finalize(self) -> None:
        """Release the backend."""
        self.predictor.close()


@dataclass(frozen=True)
class PictureLimits:
    """What one picture may be; the name of the config parameter that sets each limit is in its refusal."""

    max_pixels: int
    max_aspect: float
    max_bytes: int

    def decode(self, data: bytes, preprocess: Preprocess, uint8_nhwc: bool) -> np.ndarray:
        """One picture's bytes as the model's input item; an ImageError naming the problem."""
        if len(data) > self.max_bytes:
            raise ImageError(f"{len(data)} bytes, the limit is {self.max_bytes} (parameter max_bytes)")
        try:
            return load_picture(data, preprocess, uint8_nhwc, self.max_pixels, self.max_aspect)
        except ImageLimitError as exc:
            raise ImageError(f"{exc} (parameter {exc.limit})") from None


class PictureModel:
    """Encoded pictures -> the model's input, with the bundle's preprocessing."""

    def initialize(self, args: dict[str, str]) -> None:
        """Read the preprocessing, the input form and the limits from the config's parameters."""
        config = json.loads(args["model_config"])
        chosen = parameters(config)
        described = json.loads(chosen["preprocess"])
        self.preprocess = Preprocess(resize=described["resize"], crop=described["crop"],
                                     interpolation=described["interpolation"], mean=tuple(described["mean"]),
                                     std=tuple(described["std"]))
        self.uint8_nhwc = chosen["uint8_nhwc"] == "true"
        self.limits = PictureLimits(int(chosen["max_pixels"]), float(chosen["max_aspect"]), int(chosen["max_bytes"]))
        self.input_name = config["input"][0]["name"]
        self.output_name = config["output"][0]["name"]

    def _request(self, request: Any) -> Any:
        import triton_python_backend_utils as pb_utils

        items = pb_utils.get_input_tensor_by_name(request, self.input_name).as_numpy().reshape(-1)
        arrays = []
        for i, item in enumerate(items):
            try:
                arrays.append(self.limits.decode(bytes(item), self.preprocess, self.uint8_nhwc))
            except ImageError as exc:
                where = f"picture {i + 1} of {len(items)}" if len(items) > 1 else "the picture"
                return _error_response(f"{where}: {str(exc).removeprefix('<bytes>: ')}", invalid_input=True)
        return pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor(self.output_name, np.stack(arrays))])

    def execute(self, requests: list[Any]) -> list[Any]:
        """One response per request: its pictures decoded, or an error naming the one that could not be."""
        return [self._request(request) for request in requests]
