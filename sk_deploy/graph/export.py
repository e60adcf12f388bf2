"""torch -> ONNX: the dynamo exporter (default) or the legacy TorchScript one, with a dynamic batch axis.

The model is traced at a batch size that equals no other dimension of the network (torch.export would
otherwise specialise the batch against, say, M = 2 branches), and the written file is checked to have a
symbolic batch dimension on its input and output. Weights are stored inline: one self-contained file.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import onnx
import torch
from torch import nn

from sk_deploy.bundle import atomic_path
from sk_deploy.errors import SkDeployError
from sk_deploy.settings.base import MAX_OPSET, MIN_OPSET, OPSET
from sk_deploy.settings.graph import EXPORTERS

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
BATCH_DIM = "batch"
_INLINE_LIMIT = 1_900_000_000  # protobuf's 2 GiB ceiling, with room for the graph itself

Exporter = Literal["dynamo", "legacy"]


class ExportError(SkDeployError, RuntimeError):
    """An export that failed or produced an unusable graph; the message is meant for a person."""


@dataclass(frozen=True)
class ExportInfo:
    """What an export did: which exporter and opset, the traced batch, the seconds it took."""

    exporter: str
    opset: int
    trace_batch: int
    input_shape: tuple[int, int, int]
    seconds: float
    nodes: int

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready form for the manifest."""
        return {**asdict(self), "input_shape": list(self.input_shape), "seconds": round(self.seconds, 2)}


def check_opset(opset: int) -> int:
    """Refuse opsets outside what this exporter supports."""
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise ExportError(f"opset {opset} is not supported; use {MIN_OPSET} to {MAX_OPSET} (default {OPSET})")
    return opset


def trace_batch_for(input_shape: tuple[int, int, int]) -> int:
    """A batch size to trace with that equals no dimension the network is likely to have.

    Small numbers collide with the branch count M and the channel count 3, and the spatial sizes of the
    feature maps (H / 2^k) are avoided too; the first prime from 5 that is none of these is used.
    """
    channels, height, width = input_shape
    taken = {1, 2, 3, 4, channels}
    for k in range(6):
        taken |= {height >> k, width >> k, -(-height // 2**k), -(-width // 2**k)}
    candidate = 5
    while candidate in taken or any(candidate % p == 0 for p in range(2, candidate)):
        candidate += 1
    return candidate


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporters' warnings about their own API and their progress logging (errors still raise)."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch._dynamo", "onnxscript")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def _parameter_bytes(model: nn.Module) -> int:
    tensors = [*model.parameters(), *model.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def _export_dynamo(model: nn.Module, example: torch.Tensor, opset: int) -> onnx.ModelProto:
    batch = torch.export.Dim(BATCH_DIM)
    program = torch.onnx.export(
        model, (example,), dynamo=True, opset_version=opset, input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME], dynamic_shapes=({0: batch},), optimize=True, verbose=False,
    )
    if program is None:
        raise ExportError("the dynamo exporter returned no program")
    return program.model_proto


def _export_legacy(model: nn.Module, example: torch.Tensor, opset: int) -> onnx.ModelProto:
    with tempfile.TemporaryDirectory(prefix="sk-deploy-export-") as tmp:
        path = Path(tmp) / "legacy.onnx"
        torch.onnx.export(
            model, (example,), str(path), dynamo=False, opset_version=opset, input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME], dynamic_axes={INPUT_NAME: {0: BATCH_DIM}, OUTPUT_NAME: {0: BATCH_DIM}},
            do_constant_folding=True,
        )
        return onnx.load(str(path))


def batch_dim(value: onnx.ValueInfoProto) -> str | int | None:
    """The first dimension of a graph input or output: its symbol, its fixed size, or None if unknown."""
    dims = value.type.tensor_type.shape.dim
    if not dims:
        return None
    first = dims[0]
    if first.HasField("dim_param"):
        return first.dim_param
    if first.HasField("dim_value"):
        return first.dim_value
    return None


def check_dynamic_batch(model: onnx.ModelProto, trace_batch: int) -> None:
    """Raise ExportError unless every graph input and output has a symbolic first (batch) dimension."""
    for kind, values in (("input", model.graph.input), ("output", model.graph.output)):
        for value in values:
            dim = batch_dim(value)
            if not isinstance(dim, str):
                raise ExportError(
                    f"the exporter fixed the batch dimension of {kind} {value.name!r} to {dim} (traced at batch "
                    f"{trace_batch}); the model has a batch-dependent branch that the exporter specialised"
                )


def export_onnx(
    model: nn.Module,
    input_shape: tuple[int, int, int],
    exporter: Exporter = "dynamo",
    opset: int = OPSET,
) -> tuple[onnx.ModelProto, ExportInfo]:
    """Export ``model`` (eval mode) for inputs (N, *input_shape) with a symbolic batch N.

    Returns the exporter's graph as is (the "raw" model) and what the export did. Raises ExportError when the
    exporter fails, the model is too large for one file, or the batch came out fixed.
    """
    if exporter not in EXPORTERS:
        raise ExportError(f"unknown exporter {exporter!r}; use one of: {', '.join(EXPORTERS)}")
    check_opset(opset)
    if _parameter_bytes(model) > _INLINE_LIMIT:
        raise ExportError("models over 2 GB need external ONNX weights, which this exporter does not write yet")
    model = model.eval()
    trace_batch = trace_batch_for(input_shape)
    example = torch.randn(trace_batch, *input_shape, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    try:
        with _quiet_exporter(), torch.no_grad():
            if exporter == "dynamo":
                proto = _export_dynamo(model, example, opset)
            else:
                proto = _export_legacy(model, example, opset)
    except ExportError:
        raise
    except Exception as exc:  # the exporters raise many unrelated types
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"the {exporter} exporter failed: {type(exc).__name__}: {first[:300]}") from exc
    seconds = time.perf_counter() - start
    check_dynamic_batch(proto, trace_batch)
    return proto, ExportInfo(exporter, opset, trace_batch, tuple(input_shape), seconds, len(proto.graph.node))


def save_model(model: onnx.ModelProto, path: str | Path) -> Path:
    """Write ``model`` as one self-contained file, to a temporary name first and then renamed."""
    path = Path(path)
    if model.ByteSize() > _INLINE_LIMIT:
        raise ExportError(f"{path.name}: the model is over 2 GB and cannot be written as one ONNX file")
    with atomic_path(path) as tmp:
        onnx.save_model(model, str(tmp))
    return path
