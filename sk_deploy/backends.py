"""The backend table: every backend the Predictor can open, with every fact another module needs of it.

A new backend is one entry of BACKENDS; the Predictor (``auto`` included), the service's ``--instances``, ``bench``,
a recipe's stages, ``evaluate``, ``verify`` and the command line's lists all ask this table. It imports no
runtime: a backend's class is named as ``module:Class`` and imported when it is opened, so every stage may read
the table (``graph``, ``precision`` and ``bundle`` included) without loading ONNX Runtime, OpenVINO or PyTorch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sk_deploy.machine import OPENVINO_INSTALL, ORT_GPU_INSTALL, TENSORRT_INSTALL, Machine
from sk_deploy.precisions import Precision

if TYPE_CHECKING:
    from sk_deploy.bundle import Bundle

ONNX_PRECISIONS = (Precision.FP32, Precision.FP16, Precision.INT8, Precision.TF32)
RAW_FILE = "model.raw.onnx"  # the exporter's graph before cleanup (bundle.RAW_FILE; the bundle imports this table)


@dataclass(frozen=True)
class BenchVariant:
    """One row kind of ``sk-deploy bench``: a backend of the table and how it runs (captured CUDA graphs,
    ``torch.compile``, or a fixed file of the bundle at some precisions)."""

    name: str
    backend: str
    about: str
    opt_in: bool = False
    cuda_graph: bool = False
    compile: str | None = None
    file: str | None = None
    file_precisions: tuple[str, ...] = ()


@dataclass(frozen=True)
class BackendSpec:
    """One backend: its class, what it runs, where, at which precisions, and how every stage treats it.

    ``runs``: ``onnx`` (a graph of the bundle), ``engine`` (a TensorRT engine) or ``network`` (the PyTorch network
    the bundle came from). ``device``: ``cpu``, ``gpu``, or ``any`` (the GPU when there is one, else the CPU); a CPU
    backend takes the CPU's graph forms. ``family``: the key of the Predictor's ``options`` its options come from.
    """

    name: str
    cls: str
    runs: str
    device: str
    family: str
    about: str
    precisions: tuple[Precision, ...] = ONNX_PRECISIONS
    prefers: str | None = None
    """The graph form (a GraphForm target) it runs best when the bundle has several of a precision."""
    provider: str | None = None
    """The ONNX Runtime execution provider it runs on (ONNX Runtime backends)."""
    package: str | None = None
    """The optional package it needs beyond the base install (``openvino``, ``tensorrt``)."""
    one_instance: str | None = None
    """Why it runs one instance at a time; None: ``serve --instances N`` runs N in parallel, each with its share
    of the cores (its class's ``share_cores``)."""
    auto: int | None = None
    """Its place in ``auto``'s order (lower first); None: ``auto`` never takes it."""
    auto_rule: str | None = None
    """``module:function`` (bundle, precision, machine, spec) -> Choice deciding whether ``auto`` takes it here;
    None: it is taken where the machine has what it needs (``machine_refusal``)."""
    benched: bool = True
    """A row of ``sk-deploy bench`` by default (its variants are asked for)."""
    raw: tuple[Precision, ...] = ()
    """The precisions its ``-raw`` bench variant runs the exporter's graph (model.raw.onnx) at; none: no variant."""
    captures_graph: bool = False
    """It can replay one captured CUDA graph per batch size (a ``-graph`` bench variant; the service pads)."""
    compiles: str | None = None
    """A ``torch.compile`` mode its ``-compile`` bench variant runs (the network backend)."""
    compile_about: str = ""
    evaluate: bool = True
    """``sk-deploy evaluate --backends`` runs it (on each graph of the bundle)."""
    verify: bool = False
    """``sk-deploy verify``'s backend pass runs it against model.onnx on ONNX Runtime CPU."""
    variants: tuple[BenchVariant, ...] = field(init=False, compare=False)
    """Its rows in `sk-deploy bench`: its own, and the variants the facts above give."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "variants", self._variants())

    def _variants(self) -> tuple[BenchVariant, ...]:
        variants = [BenchVariant(self.name, self.name, self.about, opt_in=not self.benched)]
        if self.compiles:
            variants.append(BenchVariant(f"{self.name}-compile", self.name, self.compile_about, opt_in=True,
                                         compile=self.compiles))
        if self.raw:
            variants.append(BenchVariant(f"{self.name}-raw", self.name, f"{self.about}, on {RAW_FILE} (the "
                                         f"exporter's graph before cleanup)", opt_in=True, file=RAW_FILE,
                                         file_precisions=tuple(str(p) for p in self.raw)))
        if self.captures_graph:
            variants.append(BenchVariant(f"{self.name}-graph", self.name, f"{self.about}, replaying a captured CUDA "
                                         "graph per batch size", opt_in=True, cuda_graph=True))
        return tuple(variants)

    def backend_class(self) -> Any:
        """The backend's class (its module imported now)."""
        module, name = self.cls.split(":")
        return getattr(importlib.import_module(module), name)

    def default_options(self, precision: str, cuda_graph: bool = False) -> Any:
        """The backend's options for ``precision`` when none are given (its class's ``default_options``)."""
        return self.backend_class().default_options(precision, cuda_graph)

    def open(self, path: Path | None, bundle: Bundle | None, precision: str, options: Any) -> Any:
        """Construct the backend (one constructor shape for all)."""
        return self.backend_class()(path, bundle, precision=precision, options=options)

    @property
    def parallel(self) -> bool:
        """Whether several instances of it run in parallel in one service."""
        return self.one_instance is None

    def runs_on(self, device: str) -> bool:
        """Whether it runs on ``device`` (cpu or gpu)."""
        return self.device in (device, "any")

    def on_gpu(self, machine: Machine) -> bool:
        """Whether it computes on this machine's GPU."""
        return self.device == "gpu" or (self.device == "any" and machine.cuda)

    def machine_refusal(self, machine: Machine) -> str | None:
        """Why ``machine`` lacks what this backend needs (a GPU, its provider, its package), None when it has it."""
        if self.device == "gpu" and not machine.cuda:
            return "no CUDA GPU"
        if self.provider and self.provider not in machine.ort_providers:
            return f"ONNX Runtime's {self.provider} is not installed: {ORT_GPU_INSTALL}"
        if self.package == "openvino" and machine.openvino_version is None:
            return f"OpenVINO is not installed: {OPENVINO_INSTALL}"
        if self.package == "tensorrt" and machine.tensorrt_version is None:
            return f"TensorRT is not installed: {TENSORRT_INSTALL}"
        return None


_ONE_STREAM = ("one session's runs share its device stream, and several instances are untested without a GPU; "
               "not offered")

#: Every backend, by name, in the order they are listed to a user. A new backend is one entry here.
BACKENDS: dict[str, BackendSpec] = {spec.name: spec for spec in (
    BackendSpec("tensorrt", "sk_deploy.runtime.trt_backend:TensorRTBackend", "engine", "gpu", "tensorrt",
                "the bundle's TensorRT engine of that precision (sk-deploy build)", package="tensorrt",
                one_instance="an engine has one execution context and one set of device buffers here: parallel "
                             "runs would overwrite each other",
                auto=0, auto_rule="sk_deploy.runtime.auto:fitting_engine", captures_graph=True, verify=True),
    BackendSpec("ort-tensorrt", "sk_deploy.runtime.ort_backend:OrtTensorRTBackend", "onnx", "gpu", "ort",
                "ONNX Runtime's TensorRT provider", provider="TensorrtExecutionProvider", one_instance=_ONE_STREAM),
    BackendSpec("ort-cuda", "sk_deploy.runtime.ort_backend:OrtCudaBackend", "onnx", "gpu", "ort",
                "ONNX Runtime CUDA with IO binding", provider="CUDAExecutionProvider", one_instance=_ONE_STREAM,
                auto=1, captures_graph=True, verify=True),
    BackendSpec("ort-cpu", "sk_deploy.runtime.ort_backend:OrtCpuBackend", "onnx", "cpu", "ort",
                "ONNX Runtime CPU on the graph of that precision (model.int8-cpu.onnx for int8)",
                provider="CPUExecutionProvider", auto=4, auto_rule="sk_deploy.runtime.auto:cpu_fallback",
                raw=(Precision.FP32,), verify=True),
    # OpenVINO runs the TensorRT INT8 form faster than the CPU form (benchmarks/results/cpu-2core/openvino.md).
    BackendSpec("openvino", "sk_deploy.runtime.openvino_backend:OpenVinoBackend", "onnx", "cpu", "openvino",
                "OpenVINO on the CPU: fp32 pinned to f32, bf16 (CPUs with native bfloat16), int8 (model.int8.onnx "
                "first)", (Precision.FP32, Precision.BF16, Precision.INT8), prefers="tensorrt", package="openvino",
                auto=3, auto_rule="sk_deploy.runtime.auto:faster_cpu", raw=(Precision.FP32, Precision.BF16),
                verify=True),
    BackendSpec("torch", "sk_deploy.runtime.torch_backend:TorchBackend", "network", "any", "torch",
                "PyTorch eager, the network the bundle came from; fp32 is the baseline",
                (Precision.FP32, Precision.FP16, Precision.TF32),
                one_instance="PyTorch's intra-op threads are one process-wide setting (torch.set_num_threads), so "
                             "parallel instances would each take every core",
                auto=2, compiles="default", compile_about="torch.compile (mode default) of that network; compiles "
                "once per batch size, minutes on a CPU and needs a C compiler there", evaluate=False),
)}

#: the backend every comparison's reference runs on (the float32 graph on ONNX Runtime's CPU provider)
REFERENCE = "ort-cpu"
#: the backend whose eager float32 run is every benchmark's baseline
BASELINE = "torch"


def backend(name: str) -> BackendSpec:
    """The table's entry for ``name``; an unknown one is a KeyError naming the known ones."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise KeyError(f"unknown backend {name!r}; choose one of: {', '.join(BACKENDS)}") from None


def backend_names(*, evaluate: bool | None = None, verify: bool | None = None, device: str | None = None,
                  parallel: bool | None = None, runs: str | None = None) -> tuple[str, ...]:
    """The backends, in the table's order, that have every fact given (``device``: those running there)."""
    return tuple(name for name, spec in BACKENDS.items()
                 if (evaluate is None or spec.evaluate == evaluate) and (verify is None or spec.verify == verify)
                 and (device is None or spec.runs_on(device)) and (parallel is None or spec.parallel == parallel)
                 and (runs is None or spec.runs == runs))


def gated_backends() -> tuple[str, ...]:
    """The backends ``sk-deploy quantize`` judges each precision graph on (the CPU backends running ONNX graphs);
    ``auto`` serves a gated precision on one of them only where its gate passed there. A GPU backend, which
    quantize cannot run, is held to the graph's gate on the reference backend."""
    return backend_names(device="cpu", runs="onnx")


def auto_order() -> list[BackendSpec]:
    """The backends ``auto`` tries, in its order."""
    return sorted((spec for spec in BACKENDS.values() if spec.auto is not None), key=lambda spec: spec.auto or 0)


def bench_variants() -> dict[str, BenchVariant]:
    """Every row kind of ``sk-deploy bench``, by name: each backend's own and its variants."""
    return {variant.name: variant for spec in BACKENDS.values() for variant in spec.variants}


def default_bench_backends() -> tuple[str, ...]:
    """What ``sk-deploy bench`` measures unless asked: every backend's own rows (the variants are asked for)."""
    return tuple(name for name, variant in bench_variants().items() if not variant.opt_in)


def bench_backends(device: str, precision: str) -> tuple[str, ...]:
    """What a recipe benchmarks a graph of ``precision`` on for its ``device`` target: every default bench backend
    running there at that precision (the network backend at fp32 only: it is the float32 baseline)."""
    return tuple(name for name in default_bench_backends() for spec in [BACKENDS[bench_variants()[name].backend]]
                 if spec.runs_on(device) and precision in spec.precisions
                 and (spec.runs != "network" or precision == Precision.FP32))


def evaluate_backends(device: str) -> tuple[str, ...]:
    """What a recipe evaluates each graph on for its ``device`` target: the reference backend, and every backend
    ``evaluate`` runs there."""
    return tuple(dict.fromkeys((REFERENCE, *backend_names(evaluate=True, device=device))))


def runners_of(precision: str, device: str | None = None) -> tuple[str, ...]:
    """The backends that run ``precision`` (on ``device``)."""
    return tuple(name for name, spec in BACKENDS.items()
                 if precision in spec.precisions and (device is None or spec.runs_on(device)))
