"""Preprocessing into the graph: the model takes uint8 NHWC pictures and normalises them itself.

The float NCHW input (N, 3, H, W) is replaced by a uint8 input (N, H, W, 3), the resized and centre-cropped
picture exactly as decoded, followed by ``Transpose`` (on the uint8 bytes, the cheapest place for it), ``Cast``
to float, and one ``Mul`` and one ``Add`` that scale to [0, 1] and normalise with the mean and std:
x * 1 / (255 std) - mean / std. A quarter of the bytes cross from host to device, and no client can get the
normalisation wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_ir as ir

from sk_deploy.errors import SkDeployError
from sk_deploy.images import Preprocess

IMAGE_INPUT = "image"


class PreprocessError(SkDeployError, ValueError):
    """A graph whose input cannot take fused preprocessing."""


@dataclass
class PreprocessReport:
    """The input before and after, and the constants baked in."""

    old_input: dict[str, object]
    new_input: dict[str, object]
    mean: list[float]
    std: list[float]

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready form for the manifest."""
        return {"old_input": self.old_input, "new_input": self.new_input, "mean": self.mean, "std": self.std}


def _describe(value: ir.Value) -> dict[str, object]:
    dims = [d if isinstance(d, int) else str(d) for d in value.shape] if value.shape is not None else None
    return {"name": value.name, "shape": dims, "dtype": value.dtype.numpy().name if value.dtype else None}


def run(model: onnx.ModelProto, preprocess: Preprocess) -> tuple[onnx.ModelProto, PreprocessReport]:
    """``apply`` on a proto of its own: returns the new model and the report; the input is not modified."""
    ir_model = ir.from_proto(model)
    report = apply(ir_model, preprocess)
    return ir.to_proto(ir_model), report


def apply(ir_model: ir.Model, preprocess: Preprocess) -> PreprocessReport:
    """Give ``ir_model``, in place, a uint8 NHWC input named ``image`` with ``preprocess``'s scaling and mean/std
    inside. The model must have one float32 input of shape (N, 3, H, W)."""
    graph = ir_model.graph
    if len(graph.inputs) != 1:
        raise PreprocessError(f"fused preprocessing needs a model with one input, this one has {len(graph.inputs)}")
    old = graph.inputs[0]
    if old.dtype != ir.DataType.FLOAT or old.shape is None or old.shape.rank() != 4 or old.shape[1] != 3:
        raise PreprocessError(f"fused preprocessing needs a float32 (N, 3, H, W) input, got {_describe(old)}")
    batch, _, height, width = old.shape
    image = ir.Value(name=IMAGE_INPUT, type=ir.TensorType(ir.DataType.UINT8), shape=ir.Shape([batch, height, width, 3]))

    mean = np.asarray(preprocess.mean, dtype=np.float64)
    std = np.asarray(preprocess.std, dtype=np.float64)
    scale = (1.0 / (255.0 * std)).astype(np.float32).reshape(1, 3, 1, 1)
    shift = (-mean / std).astype(np.float32).reshape(1, 3, 1, 1)
    constants = []
    for name, array in (("preprocess.scale", scale), ("preprocess.shift", shift)):
        value = ir.Value(name=name, shape=ir.Shape(array.shape), type=ir.TensorType(ir.DataType.FLOAT),
                         const_value=ir.tensor(array, name=name))
        graph.register_initializer(value)
        constants.append(value)

    # Cast first: TensorRT's kUINT8 documentation asks for uint8 inputs to be converted to float or half before
    # any other layer (a Transpose on uint8 is one it may not take).
    cast = ir.Node("", "Cast", [image], [ir.AttrInt64("to", ir.DataType.FLOAT)], name="preprocess/Cast")
    nchw = ir.Node("", "Transpose", [cast.outputs[0]], [ir.AttrInt64s("perm", [0, 3, 1, 2])],
                   name="preprocess/Transpose")
    mul = ir.Node("", "Mul", [nchw.outputs[0], constants[0]], name="preprocess/Scale")
    add = ir.Node("", "Add", [mul.outputs[0], constants[1]], name="preprocess/Normalize")
    for node in (cast, nchw, mul, add):
        node.outputs[0].name = f"{node.name}_out"
    old_description = _describe(old)
    old.replace_all_uses_with(add.outputs[0])
    graph.inputs[0] = image
    first = next(iter(graph))
    graph.insert_before(first, [cast, nchw, mul, add])
    report = PreprocessReport(
        old_input=old_description, new_input=_describe(image),
        mean=[float(v) for v in preprocess.mean], std=[float(v) for v in preprocess.std],
    )
    return report
