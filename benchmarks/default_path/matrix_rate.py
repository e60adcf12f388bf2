"""This CPU's int8 and fp32 matrix rates, in GOP/s (one multiply-add = 2 operations), through OpenVINO and ONNX
Runtime: a GEMM (M x K times the transpose of N x K) and a 3x3 convolution, each as a float32 graph and as the
same graph with QuantizeLinear/DequantizeLinear on its input and weights (symmetric int8 weights, uint8 and int8
activations), the form sk-deploy's int8 graphs take; what OpenVINO compiled each to is read back (the node's
runtime precision), so an int8 figure is known to be int8 arithmetic.

Run alone it prints JSON; benchmarks/default_path/run.py runs it in a process of its own.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

GEMM = (256, 1024, 1024)  # M, K, N
CONV = (8, 128, 28, 128)  # batch, channels in, size, channels out (3x3, pad 1)


def _qdq(name: str, zero_type: int) -> tuple[list[Any], list[Any], str]:
    """Q/DQ nodes on tensor ``name`` (scale 1/64, zero point 0 of ``zero_type``), their initializers, the output."""
    scale = numpy_helper.from_array(np.array(1 / 64, np.float32), f"{name}_scale")
    dtype = np.uint8 if zero_type == TensorProto.UINT8 else np.int8
    zero = numpy_helper.from_array(np.array(0 if dtype == np.int8 else 128, dtype), f"{name}_zero")
    nodes = [helper.make_node("QuantizeLinear", [name, scale.name, zero.name], [f"{name}_q"]),
             helper.make_node("DequantizeLinear", [f"{name}_q", scale.name, zero.name], [f"{name}_dq"])]
    return nodes, [scale, zero], f"{name}_dq"


def model(kind: str, quantized: bool, activations: int = TensorProto.INT8) -> onnx.ModelProto:
    """A one-operation graph: ``gemm`` or ``conv``, float32 or with Q/DQ on its input and weights."""
    rng = np.random.default_rng(0)
    if kind == "gemm":
        m, k, n = GEMM
        shape_in, shape_out = [m, k], [m, n]
        weight = (rng.standard_normal((n, k)) * 0.5).astype(np.float32)  # N x K: Gemm transB, no runtime transpose
    else:
        b, c, s, o = CONV
        shape_in, shape_out = [b, c, s, s], [b, o, s, s]
        weight = (rng.standard_normal((o, c, 3, 3)) * 0.5).astype(np.float32)
    nodes, inits, x, w = [], [numpy_helper.from_array(weight, "w")], "x", "w"
    if quantized:
        qx, ix, x = _qdq("x", activations)
        qw, iw, w = _qdq("w", TensorProto.INT8)
        nodes, inits = qx + qw, inits + ix + iw
    op = helper.make_node("Gemm", [x, w], ["y"], transB=1) if kind == "gemm" else helper.make_node(
        "Conv", [x, w], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    graph = helper.make_graph([*nodes, op], kind, [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape_in)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape_out)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def operations(kind: str) -> float:
    """Operations (2 per multiply-add) of one run."""
    if kind == "gemm":
        m, k, n = GEMM
        return 2.0 * m * k * n
    b, c, s, o = CONV
    return 2.0 * b * c * s * s * o * 9


def _time(run: Any, x: np.ndarray, seconds: float = 1.5) -> float:
    """Median seconds of one run, over about ``seconds`` after three warm-up runs."""
    for _ in range(3):
        run(x)
    times: list[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 5:
        start = time.perf_counter()
        run(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def openvino_rate(graph: onnx.ModelProto, x: np.ndarray, op_kind: str) -> dict[str, Any]:
    """GOP/s of ``graph`` on OpenVINO (f32 pinned for the float parts) and the runtime precision of its node."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(graph.SerializeToString(), b""), "CPU",
                                  {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"})
    request = compiled.create_infer_request()
    info = [op.get_rt_info() for op in compiled.get_runtime_model().get_ops()]
    runtime = sorted({i["runtimePrecision"].astype(str) for i in info
                      if i["layerType"].astype(str) in ("FullyConnected", "MatMul", "Convolution")})
    seconds = _time(lambda a: request.infer({0: a}), x)
    return {"gops": round(operations(op_kind) / seconds / 1e9, 1), "ms": round(seconds * 1e3, 3),
            "runtime_precision": runtime}


def ort_rate(graph: onnx.ModelProto, x: np.ndarray, op_kind: str) -> dict[str, Any]:
    """GOP/s of ``graph`` on ONNX Runtime's CPU provider (all optimisations: Q/DQ pairs fused to QLinear ops)."""
    import onnxruntime as ort

    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    seconds = _time(lambda a: session.run(None, {"x": a}), x)
    return {"gops": round(operations(op_kind) / seconds / 1e9, 1), "ms": round(seconds * 1e3, 3)}


def measure() -> dict[str, Any]:
    """Every rate: (runtime, operation, form) -> GOP/s, milliseconds and (OpenVINO) the node's runtime precision."""
    out: dict[str, Any] = {"gemm_shape_mkn": list(GEMM), "conv_shape_b_cin_size_cout": list(CONV), "rates": {}}
    for op_kind in ("gemm", "conv"):
        shape = [GEMM[0], GEMM[1]] if op_kind == "gemm" else [CONV[0], CONV[1], CONV[2], CONV[2]]
        x = np.random.default_rng(1).standard_normal(shape).astype(np.float32)
        forms = {"fp32": model(op_kind, False), "int8 (s8 activations)": model(op_kind, True),
                 "int8 (u8 activations)": model(op_kind, True, TensorProto.UINT8)}
        for form, graph in forms.items():
            out["rates"][f"openvino {op_kind} {form}"] = openvino_rate(graph, x, op_kind)
            out["rates"][f"onnxruntime {op_kind} {form}"] = ort_rate(graph, x, op_kind)
    return out


if __name__ == "__main__":
    json.dump(measure(), sys.stdout)
