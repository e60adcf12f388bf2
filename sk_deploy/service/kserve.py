"""The KServe / Triton v2 inference protocol: request parsing and response encoding, no HTTP.

JSON tensors and Triton's binary tensor extension (a JSON header of ``Inference-Header-Content-Length`` bytes,
then each binary tensor's raw little-endian bytes in order), so tritonclient's HTTP client and KServe tooling
work unchanged; outputs may also be asked for through Triton's classification extension (the top-k as
``"value:index:label"`` strings). A malformed request is a ``ProtocolError`` whose message names what was
expected; the app answers it with 400.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_CONTENT_TYPE = "application/octet-stream"

DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_), "UINT8": np.dtype(np.uint8), "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32), "UINT64": np.dtype(np.uint64), "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16), "INT32": np.dtype(np.int32), "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16), "FP32": np.dtype(np.float32), "FP64": np.dtype(np.float64),
}


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


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProtocolError(f"{what} is not valid JSON ({exc})") from None
    if not isinstance(document, dict):
        raise ProtocolError(f"{what} must be a JSON object")
    return document


def parse_infer(body: bytes, header_length: int | None) -> InferRequest:
    """A v2 infer request from its body; ``header_length`` is the Inference-Header-Content-Length, if sent."""
    if header_length is not None:
        if not 0 < header_length <= len(body):
            raise ProtocolError(f"{HEADER_LENGTH} is {header_length} but the body has {len(body)} bytes")
        header, binary = _json_object(body[:header_length], "the inference header"), memoryview(body)[header_length:]
    else:
        header, binary = _json_object(body, "the request body"), memoryview(b"")
    raw_inputs = header.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise ProtocolError('the request has no "inputs" list')
    inputs: dict[str, tuple[str, np.ndarray]] = {}
    offset = 0
    for tensor in raw_inputs:
        name, datatype, array, used = _parse_tensor(tensor, binary[offset:])
        inputs[name] = (datatype, array)
        offset += used
    if offset != len(binary):
        raise ProtocolError(f"{len(binary) - offset} bytes of binary data follow the inputs unclaimed")
    request_params = header.get("parameters") or {}
    binary_default = bool(request_params.get("binary_data_output", False))
    outputs = []
    for out in header.get("outputs") or []:
        if not isinstance(out, dict) or not isinstance(out.get("name"), str):
            raise ProtocolError('each requested output needs a "name"')
        params = out.get("parameters") or {}
        outputs.append(RequestedOutput(out["name"], bool(params.get("binary_data", binary_default)),
                                       int(params.get("classification", 0))))
    request_id = header.get("id")
    return InferRequest(str(request_id) if request_id is not None else None, inputs, outputs, binary_default)


def _parse_tensor(tensor: Any, binary: memoryview) -> tuple[str, str, np.ndarray, int]:
    """(name, datatype, array, binary bytes consumed) of one input tensor."""
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise ProtocolError('each input needs a "name", "shape", "datatype" and "data"')
    name, datatype, shape = tensor["name"], tensor.get("datatype"), tensor.get("shape")
    if datatype not in DATATYPES:
        raise ProtocolError(f"input {name!r}: datatype {datatype!r} is not one of {', '.join(DATATYPES)}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise ProtocolError(f"input {name!r}: shape must be a list of non-negative integers")
    dtype = DATATYPES[datatype]
    count = int(np.prod(shape)) if shape else 1
    size = (tensor.get("parameters") or {}).get("binary_data_size")
    if size is not None:
        if size != count * dtype.itemsize:
            raise ProtocolError(f"input {name!r}: binary_data_size {size} does not fit {datatype} {shape} "
                                f"({count * dtype.itemsize} bytes)")
        if size > len(binary):
            raise ProtocolError(f"input {name!r}: {size} bytes of binary data announced, {len(binary)} sent")
        array = np.frombuffer(binary[:size], dtype=dtype.newbyteorder("<")).astype(dtype, copy=True)
        return name, datatype, array.reshape(shape), int(size)
    if "data" not in tensor:
        raise ProtocolError(f'input {name!r} has neither "data" nor binary_data_size')
    try:
        array = np.asarray(tensor["data"], dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"input {name!r}: data is not {datatype} ({exc})") from None
    if array.size != count:
        raise ProtocolError(f"input {name!r}: {array.size} values for shape {shape} ({count} expected)")
    return name, datatype, array.reshape(shape), 0


def classification(logits: np.ndarray, k: int, labels: list[str]) -> np.ndarray:
    """Triton's classification extension: per row the top ``k`` as ``b"value:index:label"`` (best first)."""
    k = max(1, min(k, logits.shape[1]))
    order = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    rows = [[f"{row[i]:f}:{i}:{labels[i] if i < len(labels) else i}".encode() for i in idx]
            for row, idx in zip(logits, order, strict=True)]
    return np.array(rows, dtype=object)


def _bytes_tensor(array: np.ndarray) -> bytes:
    """BYTES elements in Triton's binary form: each one a 4-byte little-endian length, then its bytes."""
    return b"".join(struct.pack("<I", len(item)) + item for item in array.ravel())


def encode_response(
    model: str, version: str, request_id: str | None, outputs: list[tuple[RequestedOutput, np.ndarray]]
) -> tuple[bytes, int | None]:
    """The response body, and the inference header's length when any output is binary (else None)."""
    described, buffers = [], []
    for requested, array in outputs:
        datatype = "BYTES" if array.dtype == object else v2_datatype(array.dtype.name)
        entry: dict[str, Any] = {"name": requested.name, "datatype": datatype, "shape": list(array.shape)}
        if requested.binary:
            data = _bytes_tensor(array) if datatype == "BYTES" else np.ascontiguousarray(array).astype(
                array.dtype.newbyteorder("<"), copy=False).tobytes()
            entry["parameters"] = {"binary_data_size": len(data)}
            buffers.append(data)
        else:
            entry["data"] = ([item.decode() for item in array.ravel()] if datatype == "BYTES"
                             else array.ravel().tolist())
        described.append(entry)
    document: dict[str, Any] = {"model_name": model, "model_version": version, "outputs": described}
    if request_id is not None:
        document["id"] = request_id
    header = json.dumps(document, separators=(",", ":")).encode()
    if not buffers:
        return header, None
    return header + b"".join(buffers), len(header)
