"""ONNX files this project did not export: ``sk-deploy optimize`` (the cleanup and the SK select rewrite, checked
against the input graph in ONNX Runtime) and ``sk-deploy import`` (a bundle around one, whose reference is the
input graph itself, so quantize, build, serve and bench work on it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from sk_deploy.bundle import MODEL_FILE, RAW_FILE, Bundle, InputSpec, sha256_file, staging
from sk_deploy.graph.describe import io_description, load_onnx
from sk_deploy.graph.export import ExportError, save_model
from sk_deploy.graph.passes import optimize
from sk_deploy.images import IMAGENET_MEAN, IMAGENET_STD, Preprocess
from sk_deploy.machine import runtime_threads

PRESETS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float], str]] = {
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD, "bicubic"),
    "inception": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic"),
}
CROP_RATIO = 0.875
DEFAULT_SIZE = 224
ONNX_SOURCE = "onnx"


@dataclass
class OptimizeResult:
    """The optimised graph, each pass's report, and its largest difference from the input graph."""

    model: onnx.ModelProto
    reports: dict[str, Any]
    max_abs: float
    checked_shape: tuple[int, ...]

    @property
    def blocks(self) -> list[tuple[str, str]]:
        """Every SK candidate: (block, ``rewritten (M branches)`` or ``skipped: reason``)."""
        sk = self.reports["sk_select"]
        done = [(b["block"], f"rewritten ({b['branches']} branches)") for b in sk.get("rewritten_blocks", [])]
        return done + [(b["block"], f"skipped: {b['reason']}") for b in sk["skipped"]]


def concrete_shape(value: onnx.ValueInfoProto, batch: int = 2, size: int = DEFAULT_SIZE) -> tuple[int, ...]:
    """The input's shape with its dynamic axes filled in: ``batch`` first, ``size`` for the others."""
    dims = value.type.tensor_type.shape.dim
    return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else (batch if i == 0 else size)
                 for i, d in enumerate(dims))


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = runtime_threads()
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def random_feeds(model: onnx.ModelProto, size: int = DEFAULT_SIZE, seed: int = 0) -> dict[str, np.ndarray]:
    """A random batch of 2 for every graph input (floats standard normal, uint8 pictures uniform)."""
    inputs = io_description(model.graph.input)
    feeds = {}
    for value, described in zip(model.graph.input, inputs, strict=True):
        spec = InputSpec(described["name"], described["dtype"], "NCHW", concrete_shape(value, size=size)[1:])
        feeds[spec.name] = spec.example(2, seed)
    return feeds


def optimize_graph(source: onnx.ModelProto, fuse_preprocess: Preprocess | None = None,
                   size: int = DEFAULT_SIZE) -> OptimizeResult:
    """The cleanup and SK select rewrite of ``source``, and the largest absolute difference of its outputs from
    the input graph's in ONNX Runtime on random input (fused preprocessing changes the input: not compared)."""
    working = onnx.ModelProto()
    working.CopyFrom(source)  # the passes change the proto they are given; the input graph stays the reference
    try:
        model, reports = optimize(working, fuse_preprocess)
    except ExportError:
        raise
    except Exception as exc:  # onnxslim, onnxscript and the checker raise many unrelated types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise ExportError(f"optimising the graph failed: {type(exc).__name__}: {first[:300]}") from exc
    feeds = random_feeds(source, size)
    if fuse_preprocess is not None:
        return OptimizeResult(model, reports, float("nan"), next(iter(feeds.values())).shape)
    before, after = _run(source, feeds), _run(model, feeds)
    if len(before) != len(after):
        raise ExportError(f"the optimised graph has {len(after)} outputs, the input graph {len(before)}")
    max_abs = max(float(np.max(np.abs(a.astype(np.float64) - b))) if a.size else 0.0
                  for a, b in zip(before, after, strict=True))
    return OptimizeResult(model, reports, max_abs, next(iter(feeds.values())).shape)


def optimize_file(source: str | Path, out: str | Path, size: int = DEFAULT_SIZE) -> OptimizeResult:
    """``sk-deploy optimize``: read ``source``, optimise and check it, write ``out``."""
    result = optimize_graph(load_onnx(source), size=size)
    save_model(result.model, out)
    return result


def preprocess_for(model: onnx.ModelProto, preset: str) -> Preprocess:
    """The preprocessing of ``preset`` at the graph's input size (224 where it is dynamic)."""
    if preset not in PRESETS:
        raise ExportError(f"--preprocess {preset!r}: choose one of: {', '.join(PRESETS)}")
    mean, std, interpolation = PRESETS[preset]
    shape = concrete_shape(model.graph.input[0])
    if len(shape) != 4 or shape[1] != 3 or shape[2] != shape[3]:
        raise ExportError(f"the graph's input {shape} is not a square (N, 3, H, W) picture; import takes those")
    crop = shape[2]
    return Preprocess(resize=round(crop / CROP_RATIO), crop=crop, interpolation=interpolation, mean=mean, std=std)


def import_onnx(source: str | Path, out: str | Path, preset: str = "imagenet", fuse_preprocess: bool = False,
                force: bool = False) -> tuple[Bundle, OptimizeResult]:
    """``sk-deploy import``: a bundle around ``source``: it is ``model.raw.onnx`` (the reference verify compares
    against), its optimised form ``model.onnx``."""
    from sk_deploy.graph.pipeline import LABELS

    source = Path(source)
    raw = load_onnx(source)
    if len(raw.graph.input) != 1 or len(raw.graph.output) != 1:
        raise ExportError(f"{source}: import takes a graph of one input and one output (a classifier)")
    preprocess = preprocess_for(raw, preset)
    result = optimize_graph(raw, preprocess if fuse_preprocess else None, size=preprocess.crop)
    weights = {"source": ONNX_SOURCE, "path": str(source.resolve()), "sha256": sha256_file(source)}
    with staging(out, force) as stage:
        bundle = Bundle.new(stage, {"name": source.stem, "description": f"imported from {source.name}",
                                    "weights": weights})
        save_model(raw, stage / RAW_FILE)
        bundle.add_file(RAW_FILE, role="raw", input=io_description(raw.graph.input)[0], nodes=len(raw.graph.node))
        save_model(result.model, stage / MODEL_FILE)
        described = io_description(result.model.graph.input)[0]
        bundle.add_file(MODEL_FILE, role="model", input=described, nodes=len(result.model.graph.node))
        bundle.record("optimize", {**result.reports, "max_abs_vs_input": result.max_abs})
        output = io_description(result.model.graph.output)[0]
        classes = output["shape"][-1]
        labels = dict(LABELS) if classes == 1000 else {"source": None, "classes": classes}
        bundle.describe_io(input={**described, "layout": "NHWC" if fuse_preprocess else "NCHW",
                                  "batch": {"min": 1, "opt": 8, "max": 32}},
                           output=output, preprocess={**preprocess.to_dict(), "in_graph": fuse_preprocess},
                           labels=labels)
        bundle.save()
    bundle.path = Path(out).expanduser().resolve()
    return bundle, result


def is_imported(bundle: Bundle) -> bool:
    """Whether the bundle was made by ``import`` (its reference is its raw graph, not a PyTorch network)."""
    return bundle.weights.get("source") == ONNX_SOURCE
