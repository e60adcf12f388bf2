"""The v2 protocol's requests and answers as ``grpc_predict_v2`` messages: a ModelInferRequest read into the
protocol-neutral ``InferRequest`` (``raw_input_contents`` or typed ``contents``, checked as the HTTP path checks
its tensors), and the outputs written as a ModelInferResponse with ``raw_output_contents``, as Triton answers."""

from __future__ import annotations

from typing import Any

import numpy as np

from sk_deploy.service.bodies import MAX_DIMS
from sk_deploy.service.grpc_v2 import grpc_predict_v2_pb2 as pb
from sk_deploy.service.kserve import (
    DATATYPES,
    InferRequest,
    ProtocolError,
    RequestedOutput,
    array_from_bytes,
    array_from_values,
    check_finite,
    element_count,
    output_datatype,
    tensor_bytes,
)

CONTENTS: dict[str, tuple[str, np.dtype[Any]]] = {
    "BOOL": ("bool_contents", np.dtype(np.bool_)),
    **{t: ("int_contents", np.dtype(np.int32)) for t in ("INT8", "INT16", "INT32")},
    "INT64": ("int64_contents", np.dtype(np.int64)),
    **{t: ("uint_contents", np.dtype(np.uint32)) for t in ("UINT8", "UINT16", "UINT32")},
    "UINT64": ("uint64_contents", np.dtype(np.uint64)),
    "FP32": ("fp32_contents", np.dtype(np.float32)),
    "FP64": ("fp64_contents", np.dtype(np.float64)),
}
"""Each datatype's field of InferTensorContents and the type it holds; FP16 comes only as raw contents."""


def parse_request(request: pb.ModelInferRequest) -> InferRequest:
    """The neutral form of a ModelInferRequest; a ProtocolError names what is malformed."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise ProtocolError(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs; give one per input, "
                            f"in order, or none")
    inputs: dict[str, tuple[str, np.ndarray]] = {}
    for i, tensor in enumerate(request.inputs):
        if tensor.name in inputs:
            raise ProtocolError(f"inputs[{i}]: input {tensor.name!r} is given twice")
        inputs[tensor.name] = (tensor.datatype, _tensor_array(tensor, i, raw[i] if raw else None))
    outputs = [RequestedOutput(out.name, True, _classification(out)) for out in request.outputs]
    return InferRequest(request.id or None, inputs, outputs, binary_output_default=True)


def _tensor_array(tensor: pb.ModelInferRequest.InferInputTensor, i: int, raw: bytes | None) -> np.ndarray:
    name, datatype, shape = tensor.name, tensor.datatype, list(tensor.shape)
    if datatype not in DATATYPES:
        raise ProtocolError(f"input {name!r}: datatype {datatype!r} is not one of {', '.join(DATATYPES)}")
    if len(shape) > MAX_DIMS or any(d < 0 for d in shape):
        raise ProtocolError(f"input {name!r}: shape {shape} is not {MAX_DIMS} or fewer sizes of at least 0")
    count = element_count(name, shape)
    given = [field.name for field, _ in tensor.contents.ListFields()] if tensor.HasField("contents") else []
    if raw is not None:
        if given:
            raise ProtocolError(f"input {name!r} has both contents and raw_input_contents; send one")
        expected = count * DATATYPES[datatype].itemsize
        if len(raw) != expected:
            raise ProtocolError(f"input {name!r}: {len(raw)} bytes of raw_input_contents for {datatype} {shape} "
                                f"({expected} expected)")
        array = array_from_bytes(raw, datatype)
    else:
        field, held = CONTENTS.get(datatype, (None, None))
        if field is None or held is None:
            raise ProtocolError(f"input {name!r}: {datatype} comes only as raw_input_contents")
        if given not in ([], [field]):
            raise ProtocolError(f"input {name!r}: {datatype} values go in contents.{field}, got "
                                f"contents.{', contents.'.join(given)}")
        values = getattr(tensor.contents, field)
        if len(values) != count:
            raise ProtocolError(f"input {name!r}: {len(values)} values in contents.{field} for shape {shape} "
                                f"({count} expected)")
        array = array_from_values(name, np.asarray(values, dtype=held), datatype)
    check_finite(array, f"inputs[{i}] ({name!r})", datatype)
    return array.reshape(shape)


def _classification(out: pb.ModelInferRequest.InferRequestedOutputTensor) -> int:
    """The classification extension's top-k of a requested output (0: the plain tensor)."""
    if "classification" not in out.parameters:
        return 0
    param = out.parameters["classification"]
    k = param.int64_param if param.WhichOneof("parameter_choice") == "int64_param" else -1
    if k < 1:
        raise ProtocolError(f"output {out.name!r}: parameter classification must be an int64 of at least 1")
    return k


def infer_response(model: str, version: str, request_id: str | None,
                   outputs: list[tuple[RequestedOutput, np.ndarray]]) -> pb.ModelInferResponse:
    """The ModelInferResponse of ``outputs``, each one's data in ``raw_output_contents``."""
    response = pb.ModelInferResponse(model_name=model, model_version=version, id=request_id or "")
    for requested, array in outputs:
        response.outputs.add(name=requested.name, datatype=output_datatype(array), shape=list(array.shape))
        response.raw_output_contents.append(tensor_bytes(array))
    return response


def model_metadata(metadata: dict[str, Any]) -> pb.ModelMetadataResponse:
    """``v2_model.model_metadata``'s answer as a ModelMetadataResponse."""
    tensor = pb.ModelMetadataResponse.TensorMetadata
    return pb.ModelMetadataResponse(name=metadata["name"], versions=metadata["versions"],
                                    platform=metadata["platform"],
                                    inputs=[tensor(**entry) for entry in metadata["inputs"]],
                                    outputs=[tensor(**entry) for entry in metadata["outputs"]])
