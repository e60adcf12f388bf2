"""KServe v2 JSON tensors read straight into numpy (``json_tensors``): on thousands of valid and broken bodies the
values and every refusal equal what pydantic says of the whole document (the reference: ``InferBody`` validated
whole, as the service did before), with chunks small enough that arrays span many of them; a large tensor costs
its array and a few chunks, not a Python float per element."""

from __future__ import annotations

import json
import random
import tracemalloc
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from sk_deploy.service import json_tensors
from sk_deploy.service.bodies import InferBody, problems
from sk_deploy.service.json_tensors import JsonTensorError, find_data_arrays, read_infer_body

WHAT = "the request body"
MB = 1024 * 1024


def reference(body: bytes) -> str | dict[int, np.ndarray]:
    """What validating the whole document with pydantic gives: the message, or each input's data as float64."""
    try:
        document = InferBody.model_validate_json(body)
    except ValidationError as exc:
        error = exc.errors()[0]
        return f"{WHAT} is not valid JSON ({error['msg']})" if error["type"] == "json_invalid" else problems(exc)
    return {i: np.asarray(t.data, np.float64) for i, t in enumerate(document.inputs) if t.data is not None}


def ours(body: bytes) -> str | dict[int, np.ndarray]:
    """The same from ``read_infer_body``: arrays cut out, or left in the document."""
    try:
        document, arrays = read_infer_body(body, WHAT)
    except JsonTensorError as exc:
        return str(exc)
    return {i: arrays[i] if i in arrays else np.asarray(t.data, np.float64) for i, t in enumerate(document.inputs)
            if i in arrays or t.data is not None}


def same(body: bytes) -> bool:
    expected, got = reference(body), ours(body)
    if isinstance(expected, str) or isinstance(got, str):
        return expected == got
    with np.errstate(over="ignore"):
        return expected.keys() == got.keys() and all(
            got[i].dtype in (np.float32, np.float64) and np.array_equal(got[i], expected[i].astype(got[i].dtype))
            for i in got)


def bodies(rng: random.Random) -> list[str]:
    """Valid v2 bodies of every datatype (compact and indented, one and two inputs, data before and after shape)."""
    values = [0, 1, 2.5, -3e-4, 255, 1e39, 1e400, 7]
    made = []
    for datatype in ("FP32", "FP64", "UINT8", "INT64", "FP16", "BOOL"):
        for n in (0, 1, 3, 12):
            data = [rng.choice(values) for _ in range(n)]
            made.append(json.dumps({"id": "x", "inputs": [{"name": "input", "shape": [n], "datatype": datatype,
                                                            "data": data}],
                                    "outputs": [{"name": "logits", "parameters": {"classification": 2}}]}))
            made.append(json.dumps({"inputs": [{"name": "a", "shape": [n], "datatype": datatype, "data": data},
                                               {"name": "b", "datatype": datatype, "data": data, "shape": [1, n]}]},
                                   indent=rng.choice([None, 1])))
    return made


PIECES = [*'[]{},:"0123456789.eE+- \nNaIfityrulsx', "NaN", "Infinity", "-Infinity", "null", "true", '"data"',
          '"inputs"', '"x"', "[1]", "{}"]


@pytest.mark.parametrize("chunk_bytes", [1, 5, 12, json_tensors.CHUNK_BYTES])
def test_every_body_reads_as_pydantic_reads_it_whole(chunk_bytes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(json_tensors, "CHUNK_BYTES", chunk_bytes)
    rng = random.Random(chunk_bytes)
    valid = bodies(rng)
    cut = refused = 0
    for text in valid:
        assert same(text.encode()), text
    for _ in range(1500):
        text = rng.choice(valid)
        for _ in range(rng.randint(1, 3)):  # insert, delete or replace a piece anywhere
            at, op = rng.randrange(len(text) + 1), rng.random()
            text = text[:at] + (rng.choice(PIECES) if op < 0.8 else "") + text[at + (op >= 0.4):]
        body = text.encode()
        assert same(body), f"{body!r}\n  pydantic: {reference(body)}\n  ours: {ours(body)}"
        cut += bool(find_data_arrays(body))
        refused += isinstance(reference(body), str)
    assert cut > 800 and 500 < refused < 1450, (cut, refused)  # most had arrays cut out; many refused, some not


def test_the_messages_name_the_element_and_the_position() -> None:
    def body(data: str, shape: str = "[3]") -> bytes:
        return ('{"inputs": [{"name": "input", "shape": ' + shape + ', "datatype": "FP32",\n "data": [' + data +
                "]}]}").encode()

    assert ours(body("1, NaN, -Infinity")) == ("inputs[0].data[1]: Input should be a finite number; "
                                                "inputs[0].data[2]: Input should be a finite number")
    assert ours(body("1, 2, null")) == "inputs[0].data[2]: Input should be a valid number"
    assert ours(body("1, 2,")) == f"{WHAT} is not valid JSON (Invalid JSON: trailing comma at line 2 column 16)"
    assert ours(body("1, 2, NaN", shape="[-3]")) == ("inputs[0].shape[0]: Input should be greater than or equal "
                                                      "to 0; inputs[0].data[2]: Input should be a finite number")
    nan = body(", ".join(["NaN"] * 5000), shape="[5000]")
    assert ours(nan) == ("inputs[0].data[0]: Input should be a finite number; inputs[0].data[1]: Input should be a "
                         "finite number; inputs[0].data[2]: Input should be a finite number (and 4997 more)")


def test_a_large_tensor_costs_its_array_not_a_float_per_element() -> None:
    values = np.random.default_rng(0).standard_normal(3 * 224 * 224 * 4).astype(np.float32)
    body = json.dumps({"inputs": [{"name": "input", "shape": [4, 3, 224, 224], "datatype": "FP32",
                                   "data": values.tolist()}]}).encode()
    tracemalloc.start()
    try:
        document, arrays = read_infer_body(body, WHAT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert document.inputs[0].data is None and arrays[0].dtype == np.float32
    np.testing.assert_array_equal(arrays[0], values)  # float32 -> JSON -> float32 is exact
    assert peak < values.nbytes + 2 * MB, f"{peak / MB:.1f} MB to read {values.nbytes / MB:.1f} MB of float32"


def test_an_odd_document_is_left_to_the_full_parse() -> None:
    def arrays(document: Any) -> int:
        return len(find_data_arrays(json.dumps(document).encode()))

    tensor = {"name": "input", "shape": [2], "datatype": "FP32", "data": [1, 2]}
    assert arrays({"inputs": [tensor, tensor]}) == 2
    assert arrays({"inputs": [{**tensor, "data": [[1], [2]]}]}) == 0  # nested: pydantic refuses it as before
    assert arrays({"inputs": [{**tensor, "data": ["1", 2]}]}) == 0  # strings: pydantic reads them as before
    assert arrays({"outputs": [{"name": "x", "data": [1]}], "inputs": [tensor]}) == 1  # only inputs[i].data
    assert arrays([tensor]) == 0
    assert len(find_data_arrays(b'{"inputs": [{"data": [1], "data": [2]}]}')) == 0  # repeated: the parser decides
