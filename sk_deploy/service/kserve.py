"""The KServe / Triton v2 inference protocol: request parsing and response encoding, no HTTP.

JSON tensors and Triton's binary tensor extension (a JSON header of ``Inference-Header-Content-Length`` bytes,
then each binary tensor's raw little-endian bytes in order), so tritonclient's HTTP client and KServe tooling
work unchanged; outputs may also be asked for through Triton's classification extension (the top-k as
``"value:index:label"`` strings). A malformed request is a ``ProtocolError`` whose message names what was
expected; the app answers it with 400.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import Any, get_args

import numpy as np

from sk_deploy.service.bodies import Datatype, InputTensor, OutputParameters
from sk_deploy.service.json_tensors import JsonTensorError, read_infer_body

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_CONTENT_TYPE = "application/octet-stream"

DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64), "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16), "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
}
assert set(DATATYPES) == set(get_args(Datatype)), "the declared datatypes are those the protocol decodes"


MAX_ELEMENTS = 2**31 - 1
"""The most elements one tensor may declare (the body limit keeps real ones far below)."""


class ProtocolError(ValueError):
    """A v2 request that does not follow the protocol or does not fit the model."""


def v2_datatype(numpy_dtype: str) -> str:
    """The v2 name of a numpy dtype name (``float32`` -> ``FP32``)."""
    for name, dtype in DATATYPES.items():
        if dtype == np.dtype(numpy_dtype):
            return name
    raise ValueError(f"no v2 datatype for {numpy_dtype}")


@dataclass(frozen=True)
class RequestedOutput:
    """An output the client asked for: as binary data or JSON, and with ``classification`` > 0 as top-k."""

    name: str
    binary: bool
    classification: int = 0


@dataclass
class InferRequest:
    """A parsed v2 infer request."""

    id: str | None
    inputs: dict[str, tuple[str, np.ndarray]]
    """name -> (datatype, array)"""
    outputs: list[RequestedOutput] = field(default_factory=list)
    binary_output_default: bool = False


def parse_infer(body: bytes, header_length: int | None) -> InferRequest:
    """A v2 infer request from its body; ``header_length`` is the Inference-Header-Content-Length, if sent.

    The JSON is validated by ``InferBody`` (a wrong type anywhere names the field); shapes are checked against
    the data before any array is made, and float inputs must be finite.
    """
    if header_length is not None:
        if not 0 < header_length <= len(body):
            raise ProtocolError(f"{HEADER_LENGTH} is {header_length} but the body has {len(body)} bytes")
        header, binary = memoryview(body)[:header_length], memoryview(body)[header_length:]
        what = "the inference header"
    else:
        header, binary, what = memoryview(body), memoryview(b""), "the request body"
    try:
        document, arrays = read_infer_body(body if header_length is None and isinstance(body, bytes)
                                           else bytes(header), what)
    except JsonTensorError as exc:
        raise ProtocolError(str(exc)) from None
    inputs: dict[str, tuple[str, np.ndarray]] = {}
    offset = 0
    for i, tensor in enumerate(document.inputs):
        array, used = _tensor_array(tensor, f"inputs[{i}] ({tensor.name!r})", binary[offset:], arrays.get(i))
        if tensor.name in inputs:
            raise ProtocolError(f"inputs[{i}]: input {tensor.name!r} is given twice")
        inputs[tensor.name] = (tensor.datatype, array)
        offset += used
    if offset != len(binary):
        raise ProtocolError(f"{len(binary) - offset} bytes of binary data follow the inputs unclaimed")
    binary_default = document.parameters.binary_data_output if document.parameters else False
    outputs = []
    for out in document.outputs or []:
        params = out.parameters or OutputParameters()
        binary_out = params.binary_data if params.binary_data is not None else binary_default
        outputs.append(RequestedOutput(out.name, binary_out, params.classification))
    return InferRequest(document.id, inputs, outputs, binary_default)


def _tensor_array(tensor: InputTensor, where: str, binary: memoryview,
                  values: np.ndarray | None) -> tuple[np.ndarray, int]:
    """(array, binary bytes consumed) of one validated input tensor; ``values``: its JSON data, read straight
    into an array (``json_tensors``), where it was not left in the document."""
    dtype = DATATYPES[tensor.datatype]
    count = element_count(tensor.name, tensor.shape)
    size = tensor.parameters.binary_data_size if tensor.parameters else None
    if size is not None:
        if size != count * dtype.itemsize:
            raise ProtocolError(f"input {tensor.name!r}: binary_data_size {size} does not fit {tensor.datatype} "
                                f"{tensor.shape} ({count * dtype.itemsize} bytes)")
        if size > len(binary):
            raise ProtocolError(f"input {tensor.name!r}: {size} bytes of binary data announced, {len(binary)} sent")
        array = array_from_bytes(binary[:size], tensor.datatype)
        used = size
    else:
        if values is None and tensor.data is None:
            raise ProtocolError(f'input {tensor.name!r} has neither "data" nor binary_data_size')
        if values is None:
            values = np.asarray(tensor.data, dtype=np.float64)
        if values.size != count:
            raise ProtocolError(f"input {tensor.name!r}: {values.size} values for shape {tensor.shape} "
                                f"({count} expected)")
        array, used = array_from_values(tensor.name, values, tensor.datatype), 0
    check_finite(array, where, tensor.datatype)
    return array.reshape(tensor.shape), used


def element_count(name: str, shape: list[int]) -> int:
    """The elements of ``shape``, or a ProtocolError past ``MAX_ELEMENTS``."""
    if math.prod(d for d in shape if d) > MAX_ELEMENTS:  # numpy refuses such a shape even when one is 0
        raise ProtocolError(f"input {name!r}: shape {shape} has more than {MAX_ELEMENTS} elements")
    return math.prod(shape)  # a Python int: no overflow, however large the shape


def array_from_bytes(data: bytes | memoryview, datatype: str) -> np.ndarray:
    """A flat array of ``datatype`` from its raw little-endian bytes (their length already checked)."""
    dtype = DATATYPES[datatype]
    return np.frombuffer(data, dtype=dtype.newbyteorder("<")).astype(dtype, copy=True)


def array_from_values(name: str, values: np.ndarray, datatype: str) -> np.ndarray:
    """``values`` (JSON numbers as float64, or a gRPC tensor's typed contents) as ``datatype``; integers must be
    whole and within the type's range (out-of-range floats become infinite, refused by ``check_finite``)."""
    dtype = DATATYPES[datatype]
    if dtype.kind in "iub" and values.size:
        low, high = (0, 1) if dtype.kind == "b" else (int(np.iinfo(dtype).min), int(np.iinfo(dtype).max))
        whole = values.dtype.kind != "f" or bool(np.all(values == np.round(values)))
        if not whole or values.min() < low or values.max() > high:
            raise ProtocolError(f"input {name!r}: data is not {datatype} (whole numbers from {low} to {high})")
    with np.errstate(over="ignore", invalid="ignore"):
        return values.astype(dtype, copy=False)


def check_finite(array: np.ndarray, where: str, datatype: str) -> None:
    """A ProtocolError if a float input holds NaN or infinity (looked at a million elements at a time: a mask of
    the whole tensor would cost a quarter of a float32 tensor more)."""
    flat = array.reshape(-1)
    step = 1 << 20
    if array.dtype.kind == "f" and not all(np.isfinite(flat[i:i + step]).all() for i in range(0, flat.size, step)):
        bad = int(array.size - np.isfinite(array).sum())
        raise ProtocolError(f"{where}: {bad} values are not finite (NaN, infinity, or out of the "
                            f"{datatype} range); inputs must be finite numbers")


def classification(logits: np.ndarray, k: int, labels: list[str]) -> np.ndarray:
    """Triton's classification extension: per row the top ``k`` as ``b"value:index:label"`` (best first)."""
    k = max(1, min(k, logits.shape[1]))
    order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    rows = [[f"{row[i]:f}:{i}:{labels[i] if i < len(labels) else i}".encode() for i in idx]
            for row, idx in zip(logits, order, strict=True)]
    return np.array(rows, dtype=object)


def output_datatype(array: np.ndarray) -> str:
    """The v2 datatype of an output array (``BYTES`` for the classification extension's strings)."""
    return "BYTES" if array.dtype == object else v2_datatype(array.dtype.name)


def tensor_bytes(array: np.ndarray) -> bytes:
    """An output's binary form: raw little-endian elements, or for BYTES Triton's (each element a 4-byte
    little-endian length, then its bytes)."""
    if array.dtype == object:
        return b"".join(struct.pack("<I", len(item)) + item for item in array.ravel())
    return np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()


def encode_response(
    model: str, version: str, request_id: str | None, outputs: list[tuple[RequestedOutput, np.ndarray]]
) -> tuple[bytes, int | None]:
    """The response body, and the inference header's length when any output is binary (else None)."""
    described, buffers = [], []
    for requested, array in outputs:
        datatype = output_datatype(array)
        entry: dict[str, Any] = {"name": requested.name, "datatype": datatype, "shape": list(array.shape)}
        if requested.binary:
            data = tensor_bytes(array)
            entry["parameters"] = {"binary_data_size": len(data)}
            buffers.append(data)
        else:
            entry["data"] = ([item.decode() for item in array.ravel()] if datatype == "BYTES"
                             else array.ravel().tolist())
        described.append(entry)
    document: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": described}
    if request_id is not None:
        document["id"] = request_id
    header = json.dumps(document, separators=(",", ":"), allow_nan=False).encode()  # strict JSON, always
    if not buffers:
        return header, None
    return header + b"".join(buffers), len(header)
