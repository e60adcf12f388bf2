"""The TensorRT backend: a bundle's engine, checked against this machine before it is deserialized, run with
``execute_async_v3`` on its own CUDA stream into device buffers allocated once (PyTorch tensors, so no
pycuda or cuda-python is needed), optionally replayed as one CUDA graph per batch size."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sk_deploy.engines.compat import EngineMismatch, check_engine
from sk_deploy.machine import BackendUnavailable, import_tensorrt, require_cuda
from sk_deploy.runtime.backend import Backend
from sk_deploy.runtime.cuda_timing import CudaPhases

if TYPE_CHECKING:
    from sk_deploy.bundle import Bundle


@dataclass(frozen=True)
class TensorRTOptions:
    """``cuda_graph``: replay one captured CUDA graph per batch size."""

    cuda_graph: bool = False


class TensorRTBackend(Backend):
    """One engine of a bundle. ``run(batch) -> logits`` for a batch within the engine's optimisation profile."""

    name = "tensorrt"
    device_timing = True
    runs_resident = True

    @classmethod
    def default_options(cls, precision: str, cuda_graph: bool = False) -> TensorRTOptions:
        """The options when none are given (the engine holds its precision)."""
        return TensorRTOptions(cuda_graph=cuda_graph)

    def __init__(self, path: str | Path | None, bundle: Bundle | None = None, *, precision: str = "fp32",
                 options: TensorRTOptions | None = None) -> None:
        if path is None or bundle is None:
            raise ValueError("the TensorRT backend runs an engine of a bundle: give its path and the bundle")
        options = options or TensorRTOptions()
        super().__init__(path, bundle, precision=precision, options=options)
        trt = import_tensorrt()
        require_cuda("the TensorRT backend")
        import torch

        self.path = Path(path)
        check_engine(bundle.entry(self.path.name), str(trt.__version__), torch.cuda.get_device_name(0),
                     tuple(torch.cuda.get_device_capability(0)), file=self.path.name)  # type: ignore[arg-type]
        self._torch = torch
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise EngineMismatch(f"{self.path.name}: TensorRT could not deserialize it; rebuild: sk-deploy build")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(inputs) != 1 or len(outputs) != 1:
            raise BackendUnavailable(f"{self.path.name}: expected one input and one output, got {inputs} / {outputs}")
        self.input_name, self.output_name = inputs[0], outputs[0]
        low, _, high = (tuple(s) for s in self.engine.get_tensor_profile_shape(self.input_name, 0))
        self.min_batch, self.max_batch = int(low[0]), int(high[0])
        self.stream = torch.cuda.Stream()
        self._input = self._buffer(trt, self.input_name, high)
        self.context.set_input_shape(self.input_name, high)
        self._output = self._buffer(trt, self.output_name, tuple(self.context.get_tensor_shape(self.output_name)))
        self.context.set_tensor_address(self.input_name, self._input.data_ptr())
        self.context.set_tensor_address(self.output_name, self._output.data_ptr())
        self.cuda_graph = options.cuda_graph
        self.captures_graphs = options.cuda_graph
        #: per captured batch size: its own execution context (shapes fixed at capture) and graph; every context
        #: reads and writes the same device buffers
        self._graphs: dict[int, tuple[Any, Any]] = {}

    def _buffer(self, trt: Any, name: str, shape: tuple[int, ...]) -> Any:
        dtype = np.dtype(trt.nptype(self.engine.get_tensor_dtype(name)))
        torch_dtype = {np.dtype(np.float32): self._torch.float32, np.dtype(np.float16): self._torch.float16,
                       np.dtype(np.uint8): self._torch.uint8, np.dtype(np.int8): self._torch.int8}[dtype]
        return self._torch.empty(tuple(int(d) for d in shape), dtype=torch_dtype, device="cuda")

    def _enqueue(self, context: Any = None) -> None:
        if not (context or self.context).execute_async_v3(self.stream.cuda_stream):
            raise RuntimeError(f"{self.path.name}: TensorRT execution failed (its messages are above)")

    def run(self, batch: np.ndarray) -> np.ndarray:
        """Logits (float32) of ``batch``; its size must lie within the engine's profile."""
        return self._run(batch, None)

    def run_timed(self, batch: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        """Logits of ``batch`` and the GPU's milliseconds for h2d (input copy), compute (the engine, or its
        CUDA graph) and d2h (logits back), from CUDA events on the engine's stream: trtexec's three phases."""
        phases = CudaPhases()
        logits = self._run(batch, phases)
        return logits, phases.elapsed()

    def _run(self, batch: np.ndarray, phases: CudaPhases | None) -> np.ndarray:
        size = batch.shape[0]
        if not self.min_batch <= size <= self.max_batch:
            raise ValueError(f"batch of {size} is outside the engine's profile ({self.min_batch} to {self.max_batch}); "
                             f"rebuild with sk-deploy build --batch-profile MIN:OPT:MAX")
        torch = self._torch

        def mark() -> None:
            if phases is not None:
                phases.mark()  # on the current stream: the engine's, inside the block below

        with torch.cuda.stream(self.stream):
            mark()
            # Rows [0, size) of the buffers allocated at the largest batch: same device addresses for every size.
            self._input[:size].copy_(torch.from_numpy(np.ascontiguousarray(batch)), non_blocking=False)
            mark()
            if self.cuda_graph:
                self._replay(size)
            else:
                self.context.set_input_shape(self.input_name, tuple(batch.shape))
                self._enqueue()
            mark()
            out = self._output[:size].float().cpu()
            mark()
        self.stream.synchronize()
        return out.numpy()

    def resident(self, batch: np.ndarray) -> Callable[[], None]:
        """A run on ``batch`` copied to the engine's input buffer once, its logits left on the device: the graph's
        replay with CUDA graphs, else an enqueue; each synchronised on the engine's stream."""
        self._run(batch, None)  # copied in, shape set (and captured, with CUDA graphs)
        size = batch.shape[0]

        def run() -> None:
            with self._torch.cuda.stream(self.stream):
                if self.cuda_graph:
                    self._graphs[size][1].replay()
                else:
                    self._enqueue()
            self.stream.synchronize()

        return run

    def _replay(self, size: int) -> None:
        """A captured graph fixes its context's shapes and addresses: one context per captured size, each bound
        to the shared buffers, so replaying one size never runs another's shapes."""
        torch = self._torch
        if size not in self._graphs:
            context = self.engine.create_execution_context()
            context.set_input_shape(self.input_name, (size, *self._input.shape[1:]))
            context.set_tensor_address(self.input_name, self._input.data_ptr())
            context.set_tensor_address(self.output_name, self._output.data_ptr())
            self._enqueue(context)  # one plain run first: TensorRT may allocate or tune on a new shape
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self.stream):
                self._enqueue(context)
            self._graphs[size] = (context, graph)
        self._graphs[size][1].replay()

    def _release(self) -> None:
        """Free the CUDA graphs, the context, the engine and the device buffers (back to the driver)."""
        self._graphs.clear()
        self.context = self.engine = self._runtime = None
        self._input = self._output = None
        self._torch.cuda.empty_cache()
