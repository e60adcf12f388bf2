"""What is in an ONNX file or a bundle: inputs and outputs, op histogram, node counts, sizes, tensor ranks."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import onnx

from sk_deploy.bundle import Bundle, BundleError


def _dims(value: onnx.ValueInfoProto) -> list[int | str] | None:
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [d.dim_param if d.HasField("dim_param") else (d.dim_value if d.HasField("dim_value") else "?")
            for d in tensor.shape.dim]


def _dtype(value: onnx.ValueInfoProto) -> str:
    elem = value.type.tensor_type.elem_type
    return onnx.helper.tensor_dtype_to_np_dtype(elem).name if elem else "?"


def io_description(values: Any) -> list[dict[str, Any]]:
    """Name, shape (symbols for dynamic axes) and numpy dtype name of each graph input or output."""
    return [{"name": v.name, "shape": _dims(v), "dtype": _dtype(v)} for v in values]


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    """Count of each op type in the main graph, most frequent first."""
    return dict(Counter(node.op_type for node in model.graph.node).most_common())


def tensor_ranks(model: onnx.ModelProto) -> dict[str, int]:
    """Rank of every tensor of the main graph whose rank ONNX shape inference can tell."""
    inferred = onnx.shape_inference.infer_shapes(model)
    graph = inferred.graph
    ranks = {}
    for value in [*graph.input, *graph.value_info, *graph.output]:
        tensor = value.type.tensor_type
        if tensor.HasField("shape"):
            ranks[value.name] = len(tensor.shape.dim)
    for init in graph.initializer:
        ranks[init.name] = len(init.dims)
    return ranks


def load_onnx(path: str | Path) -> onnx.ModelProto:
    """Load an ONNX file (with its weights) or raise BundleError with one readable line."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: no such file")
    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf's DecodeError and friends share no useful base
        raise BundleError(f"{path}: not a readable ONNX model ({type(exc).__name__})") from None


def describe_model(path: str | Path) -> dict[str, Any]:
    """A JSON-ready summary of one ONNX file."""
    path = Path(path)
    model = load_onnx(path)
    ranks = tensor_ranks(model)
    return {
        "file": str(path),
        "bytes": path.stat().st_size,
        "opset": next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "inputs": io_description(model.graph.input),
        "outputs": io_description(model.graph.output),
        "nodes": len(model.graph.node),
        "ops": op_histogram(model),
        "initializers": len(model.graph.initializer),
        "parameters": sum(int(_numel(t.dims)) for t in model.graph.initializer),
        "rank5_tensors": sum(rank == 5 for rank in ranks.values()),
    }


def _numel(dims: Any) -> int:
    total = 1
    for d in dims:
        total *= d
    return total


def describe(target: str | Path) -> dict[str, Any]:
    """Summarise a bundle directory (its manifest and every ONNX file in it) or a single ONNX file."""
    target = Path(target)
    if target.is_dir():
        bundle = Bundle.open(target)
        summary = bundle.summary()
        return {
            "bundle": str(target),
            "model": summary["model"],
            "input": summary["input"],
            "preprocess": summary["preprocess"],
            "files": {name: describe_model(bundle.file(name)) for name in bundle.onnx_files()},
            "stages": summary["stages"],
        }
    if not target.exists():
        raise BundleError(f"{target}: no such file or bundle directory")
    return {"files": {target.name: describe_model(target)}}
