"""KServe v2 JSON bodies read without a Python float per tensor element: each input's flat ``data`` array is cut out
of the body and validated a chunk at a time straight into one numpy array of the declared datatype, so a tensor
costs its array (as Python floats, a 7.5 MB body of 25 pictures raised the server's peak resident size by 316 MB;
now by 26 MB, ``tests/service/test_memory.py``).

The rest of the document (the body with each cut array replaced by ``null``) is validated by ``InferBody`` as
before, and each chunk by pydantic's own float validator, so the checks and messages are the ones pydantic gives
the whole document: JSON syntax (its position in the whole body), a number where one is expected, finite values,
each element named by its index in the whole array. An array this reader does not cut out (nested, holding
strings or objects, in a document it cannot follow) stays in the document and is validated there, as before.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import ConfigDict, TypeAdapter, ValidationError

from sk_deploy.service.bodies import InferBody, InputTensor, format_problems, problems

_TOKEN = re.compile(rb'"(?:[^"\\]|\\.)*+"|[][{}:,]')
"""A string or a structural character: the scan steps over numbers, literals and whitespace."""
_ARRAY_END = re.compile(rb'[][{}"]')
"""After ``[``: the first of these is ``]`` when the array holds scalars other than strings only."""
_POSITION = re.compile(r" at line (\d+) column (\d+)$")
MAX_TOKENS = 10_000
"""Past this many strings and structural characters the document is not a plain v2 body: no array is cut out."""
CHUNK_BYTES = 64 * 1024
"""The JSON validated at a time: its Python floats (and pydantic's errors) are what a chunk costs."""
_NUMBERS = TypeAdapter(list[float], config=ConfigDict(allow_inf_nan=False))
"""A chunk of an array, validated as ``InputTensor.data`` is."""
_BLANK = re.compile(rb"[ \t\n\r]*")


class JsonTensorError(ValueError):
    """A v2 JSON body refused; its text is the whole answer (what pydantic would say of the document)."""


@dataclass(frozen=True)
class DataArray:
    """Where ``inputs[input].data`` lies in the body: ``[`` at ``start``, ``]`` at ``end``."""

    input: int
    start: int
    end: int


@dataclass
class _Frame:
    """An open object (its current key, whether a key comes next) or array (the index of its current item)."""

    kind: bytes
    key: bytes | None = None
    expecting_key: bool = True
    index: int = 0
    keys: set[bytes] = field(default_factory=set)


def find_data_arrays(text: bytes) -> list[DataArray]:
    """The flat ``inputs[i].data`` arrays of a v2 JSON document, in order; none where the document is not an object
    with one ``inputs`` array of objects with one ``data`` each (anything odd is left to the full parse)."""
    stack: list[_Frame] = []
    arrays: list[DataArray] = []
    pos = tokens = 0
    while (match := _TOKEN.search(text, pos)) is not None:
        tokens += 1
        if tokens > MAX_TOKENS:
            return []
        pos = match.end()
        char = text[match.start():match.start() + 1]
        top = stack[-1] if stack else None
        if char == b'"':
            if top is not None and top.kind == b"{" and top.expecting_key:
                top.key, top.expecting_key = text[match.start() + 1:pos - 1], False
                if top.key in top.keys and top.key in (b"inputs", b"data"):
                    return []  # a repeated key: the full parse decides which one counts
                top.keys.add(top.key)
        elif char == b"{":
            stack.append(_Frame(b"{"))
        elif char == b"[":
            end = _ARRAY_END.search(text, pos)
            if end is not None and end.group() == b"]":  # scalars only: stepped over whole
                if _in_data(stack):
                    arrays.append(DataArray(stack[1].index, match.start(), end.start()))
                pos = end.end()
            else:
                stack.append(_Frame(b"["))
        elif char in b"]}":
            if not stack:
                return []
            stack.pop()
        elif char == b"," and top is not None:
            if top.kind == b"[":
                top.index += 1
            else:
                top.expecting_key = True
    return arrays


def _in_data(stack: list[_Frame]) -> bool:
    """Whether an array opening here is the value of ``inputs[i].data`` in the document's top object."""
    return (len(stack) == 3 and stack[0].kind == b"{" and stack[0].key == b"inputs" and stack[1].kind == b"["
            and stack[2].kind == b"{" and stack[2].key == b"data")


def read_infer_body(text: bytes, what: str) -> tuple[InferBody, dict[int, np.ndarray]]:
    """The validated document, and the flat array of each input whose ``data`` was cut out (by input index; FP32
    as float32, any other datatype as float64 for ``kserve`` to check and convert); a ``JsonTensorError`` with
    the message pydantic would give the whole document otherwise."""
    arrays = find_data_arrays(text)
    document: InferBody | None = None
    refusals: list[tuple[tuple[Any, ...], str]] = []
    total = 0
    try:
        document = InferBody.model_validate_json(_without(text, arrays))
    except ValidationError as exc:
        if exc.errors()[0]["type"] == "json_invalid":
            return _read_whole(text, what)  # the message, and its position, from the whole body as before
        refusals = [(tuple(e["loc"]), e["msg"]) for e in exc.errors(include_url=False, include_input=False)]
        total = exc.error_count()
    values: dict[int, np.ndarray] = {}
    for array in arrays:
        datatype = document.inputs[array.input].datatype if document is not None else None
        values[array.input], found, count = _read_numbers(  # a refused document's arrays: only their refusals
            text, array, None if datatype is None else np.dtype(np.float32 if datatype == "FP32" else np.float64),
            what)
        refusals += [(("inputs", array.input, "data", index), message) for index, message in found]
        total += count
    if total:
        refusals.sort(key=lambda problem: _field_order(problem[0]))  # pydantic's order: by field, then by index
        raise JsonTensorError(format_problems([f"{_path(loc)}: {message}" for loc, message in refusals], total))
    assert document is not None
    return document, values


def _without(text: bytes, arrays: list[DataArray]) -> bytes:
    """The document with each of ``arrays`` replaced by ``null``."""
    pieces, pos = [], 0
    for array in arrays:
        pieces += [text[pos:array.start], b"null"]
        pos = array.end + 1
    return b"".join([*pieces, text[pos:]])


def _read_whole(text: bytes, what: str) -> tuple[InferBody, dict[int, np.ndarray]]:
    """The document validated whole, its data as Python lists: for a body that is not JSON, whose message (and
    the error's position) is pydantic's on the whole body."""
    try:
        return InferBody.model_validate_json(text), {}
    except ValidationError as exc:
        error = exc.errors()[0]
        if error["type"] == "json_invalid":
            raise JsonTensorError(f"{what} is not valid JSON ({error['msg']})") from None
        raise JsonTensorError(problems(exc)) from None


def _read_numbers(text: bytes, array: DataArray, dtype: np.dtype[Any] | None,
                  what: str) -> tuple[np.ndarray, list[tuple[int, str]], int]:
    """The numbers of one cut-out array as ``dtype`` (None: not kept, only checked), its first three refused
    elements (index, message) and how many were refused; a JSON syntax error is raised with its position in the
    whole body.

    A chunk ends with the comma after its last element and a ``0``; the next one starts at that comma behind a
    ``[0``: those values are dropped, and an empty element or a trailing comma is the syntax error (at the same
    position) it is in the whole array."""
    start, end = array.start + 1, array.end
    if _BLANK.fullmatch(text, start, end):
        return np.empty(0, np.float64 if dtype is None else dtype), [], 0
    out = np.empty(0 if dtype is None else text.count(b",", start, end) + 1, np.float64 if dtype is None else dtype)
    found: list[tuple[int, str]] = []
    refused = done = 0
    prefix, origin = b"[", start - 1  # origin: where the chunk's first byte would be in ``text``
    while start <= end:
        stop = text.find(b",", min(start + CHUNK_BYTES, end), end)
        stop = end if stop < 0 else stop
        last = stop == end
        chunk = prefix + text[start:stop] + (b"]" if last else b",0]")
        skip = len(prefix) - 1  # the leading placeholder's value
        try:
            numbers = np.array(_NUMBERS.validate_json(chunk)[skip:None if last else -1], dtype=np.float64)
        except ValidationError as exc:
            first = exc.errors(include_url=False, include_input=False)[0]
            if first["type"] == "json_invalid":
                raise JsonTensorError(f"{what} is not valid JSON ({_moved(first['msg'], chunk, text, origin)})"
                                      ) from None
            refused += exc.error_count()
            if len(found) < 3:
                found += [(done + e["loc"][0] - skip, e["msg"])
                          for e in exc.errors(include_url=False, include_input=False)[:3 - len(found)]]
            numbers = np.zeros(chunk.count(b",") + 1 - skip - (not last))
        if dtype is not None and not refused:  # once anything is refused, the values are not needed
            with np.errstate(over="ignore"):  # FP32: out of its range is infinite, refused by kserve.check_finite
                out[done:done + numbers.size] = numbers
        done += numbers.size
        prefix, origin, start = b"[0", stop - 2, stop
        if last:
            break
    return out, found, refused


def _moved(message: str, chunk: bytes, text: bytes, origin: int) -> str:
    """pydantic's JSON error ``message`` about ``chunk`` (whose byte 0 stands at ``origin`` of ``text``), its line
    and column (1-based, in bytes) told in the whole ``text``."""
    position = _POSITION.search(message)
    if position is None:
        return message
    line, column = int(position.group(1)), int(position.group(2))
    at = origin + _line_start(chunk, line) + column - 1
    # jiter's count: a newline is the end of its line, column 0 of the next
    lines, column = text.count(b"\n", 0, at + 1) + 1, at - text.rfind(b"\n", 0, at + 1)
    return f"{message[:position.start()]} at line {lines} column {column}"


def _line_start(chunk: bytes, line: int) -> int:
    """The offset in ``chunk`` where its 1-based ``line`` starts."""
    at = 0
    for _ in range(line - 1):
        at = chunk.index(b"\n", at) + 1
    return at


def _path(loc: tuple[Any, ...]) -> str:
    """``inputs[0].data[5]`` for a pydantic error location."""
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".") or "body"


def _field_order(loc: tuple[Any, ...]) -> tuple[int, int, int, int]:
    """Where pydantic puts an error at ``loc`` of an InferBody: fields in their declared order, items by index."""
    body, tensor = list(InferBody.model_fields), list(InputTensor.model_fields)
    top = body.index(loc[0]) if loc and loc[0] in body else -1
    if len(loc) > 2 and loc[0] == "inputs" and isinstance(loc[1], int):
        inner = tensor.index(loc[2]) if loc[2] in tensor else -1
        item = loc[3] if len(loc) > 3 and loc[2] == "data" and isinstance(loc[3], int) else -1
        return top, loc[1], inner, item
    return top, loc[1] if len(loc) > 1 and isinstance(loc[1], int) else -1, -1, -1
