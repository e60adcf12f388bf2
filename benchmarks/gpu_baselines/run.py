"""GPU baselines on one CUDA device: PyTorch eager (float32; float16 autocast with channels_last),
torch.compile, and ONNX Runtime's CUDA provider on the cleaned float32 and FP16 graphs, if onnxruntime-gpu is
installed. Latency per batch from CUDA events (PyTorch) or the wall clock around a synchronous run (ONNX
Runtime: host-side input, so it includes the copies; with CUDA graphs, device-resident input and output through
IO binding), medians and percentiles over repeated runs.

    python benchmarks/gpu_baselines/run.py --model sknet50 --out benchmarks/results/<machine>

TensorRT is not here: its libraries come only from NVIDIA's package index (see the JSON's notes).
A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from sk_deploy.bench.stats import summarize  # noqa: E402
from sk_deploy.bench.timing import cuda_event_times, wall_times  # noqa: E402
from sk_deploy.graph.export import export_onnx  # noqa: E402
from sk_deploy.graph.passes import optimize  # noqa: E402
from sk_deploy.jsonout import dumps  # noqa: E402
from sk_deploy.models.reference import build_reference  # noqa: E402


def percentiles(ms: list[float]) -> dict[str, float]:
    """min, p50, p90, p95, p99, max and mean of a list of milliseconds (sk_deploy.bench.stats)."""
    stats = summarize(ms).to_dict()
    del stats["n"]
    return stats


def time_torch(fn, x: torch.Tensor, iters: int, warmup: int) -> list[float]:
    """Milliseconds per call of ``fn(x)`` measured with CUDA events."""
    return cuda_event_times(lambda: fn(x), iters, warmup)


def time_ort(session, feed: dict, iters: int, warmup: int) -> list[float]:
    """Milliseconds per synchronous ``session.run`` (host input and output) by the wall clock."""
    return wall_times(lambda: session.run(None, feed), iters, warmup)


def time_ort_cuda_graph(ort, graph: bytes, batch: int, iters: int, warmup: int) -> list[float]:
    """Milliseconds per run of a CUDA-graph ONNX Runtime session on device-resident input and output
    (IO binding; the graph is captured on the first runs), by the wall clock around the synchronous run."""
    session = ort.InferenceSession(graph, providers=[("CUDAExecutionProvider", {"enable_cuda_graph": "1"})])
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    binding = session.io_binding()
    binding.bind_ortvalue_input(session.get_inputs()[0].name, ort.OrtValue.ortvalue_from_numpy(x, "cuda", 0))
    out = ort.OrtValue.ortvalue_from_shape_and_type([batch, 1000], np.float32, "cuda", 0)
    binding.bind_ortvalue_output(session.get_outputs()[0].name, out)
    return wall_times(lambda: session.run_with_iobinding(binding), iters, warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="sknet50")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--iters", type=int, default=100)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this benchmark needs a GPU")
    batches = [int(b) for b in args.batches.split(",")]
    device = torch.device("cuda")
    model = build_reference(args.model, {"source": "random", "seed": 0}).to(device)
    rows: list[dict] = []
    notes: list[str] = []

    def record(backend: str, batch: int, ms: list[float]) -> None:
        stats = percentiles(ms)
        rows.append({"backend": backend, "batch": batch, "ms": stats, "images_per_s": batch * 1000 / stats["p50"]})
        print(f"{backend:32s} batch {batch:3d}: p50 {stats['p50']:8.3f} ms  p99 {stats['p99']:8.3f} ms  "
              f"{batch * 1000 / stats['p50']:9.1f} img/s", flush=True)

    half_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    compiled = torch.compile(model)
    graphed = torch.compile(copy.deepcopy(model), mode="reduce-overhead")  # CUDA graphs
    for batch in batches:
        x = torch.randn(batch, 3, 224, 224, device=device)
        record("torch eager fp32", batch, time_torch(model, x, args.iters, args.warmup))

        def autocast_cl(t: torch.Tensor) -> torch.Tensor:
            with torch.autocast("cuda", dtype=torch.float16):
                return half_cl(t.contiguous(memory_format=torch.channels_last))

        record("torch eager fp16 autocast NHWC", batch, time_torch(autocast_cl, x, args.iters, args.warmup))
        record("torch.compile fp32", batch, time_torch(compiled, x, args.iters, args.warmup))
        record("torch.compile reduce-overhead fp32", batch, time_torch(graphed, x, args.iters, args.warmup))

    try:
        import onnxruntime as ort

        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise ImportError(f"onnxruntime {ort.__version__} has no CUDA provider")
        if hasattr(ort, "preload_dlls"):
            ort.preload_dlls()  # CUDA and cuDNN from the nvidia-* wheels PyTorch brought
    except ImportError as exc:
        notes.append(f"ONNX Runtime CUDA not measured: {exc}")
    else:
        import onnx

        from sk_deploy.precision.fp16 import convert_fp16

        raw, _ = export_onnx(model.cpu(), (3, 224, 224), "dynamo", 18)
        clean, _ = optimize(raw, None)
        graphs = {"ort-cuda fp32 (cleaned)": clean, "ort-cuda fp16 (cleaned)": convert_fp16(clean)[0]}
        for backend, graph in graphs.items():
            session = ort.InferenceSession(graph.SerializeToString(), providers=["CUDAExecutionProvider"])
            used = session.get_providers()
            if used[0] != "CUDAExecutionProvider":
                notes.append(f"{backend}: ran on {used}, not CUDA")
            name = session.get_inputs()[0].name
            for batch in batches:
                feed = {name: np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)}
                record(backend, batch, time_ort(session, feed, args.iters, args.warmup))
                record(backend.replace("ort-cuda", "ort-cuda graph"), batch,
                       time_ort_cuda_graph(ort, graph.SerializeToString(), batch, args.iters, args.warmup))
        notes.append(f"onnxruntime {ort.__version__}, onnx {onnx.__version__}")
    notes.append("TensorRT: not measured; tensorrt-cu13-libs on the public index is a stub that downloads from "
                 "NVIDIA's index at install time, which cannot be reached from these machines")

    eager = {r["batch"]: r["ms"]["p50"] for r in rows if r["backend"] == "torch eager fp32"}
    for r in rows:
        r["speedup_vs_eager_fp32"] = eager[r["batch"]] / r["ms"]["p50"]
    report = {
        "command": "python benchmarks/gpu_baselines/run.py " + " ".join(sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "model": args.model,
        "machine": {"gpu": torch.cuda.get_device_name(), "capability": list(torch.cuda.get_device_capability()),
                    "torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                    "python": platform.python_version()},
        "iters": args.iters, "warmup": args.warmup, "rows": rows, "notes": notes,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_baselines.json").write_text(dumps(report, indent=2) + "\n")
    lines = [f"# GPU baselines: {args.model} on {report['machine']['gpu']}", "",
             f"Reproduce: `{report['command']}` ({report['date']}; torch {torch.__version__}, CUDA "
             f"{torch.version.cuda}; random weights, 224x224; {args.iters} timed runs after {args.warmup} warm-up)",
             "", "| backend | batch | p50 ms | p90 ms | p99 ms | images/s | vs eager fp32 |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['backend']} | {r['batch']} | {r['ms']['p50']:.3f} | {r['ms']['p90']:.3f} | "
                     f"{r['ms']['p99']:.3f} | {r['images_per_s']:.0f} | {r['speedup_vs_eager_fp32']:.2f}x |")
    lines += ["", *[f"- {n}" for n in notes], ""]
    (args.out / "gpu_baselines.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
