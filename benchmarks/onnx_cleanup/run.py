"""ONNX Runtime CPU latency of SKNet-50: the cleaned graph (sk-deploy's passes) vs the raw export vs onnxslim.

All variants come from one dynamo export of the same network and run in one process, interleaved (each round
runs every variant once, in a rotating order), so drift and background load hit them alike; the figures are
medians over the rounds. Writes ``onnx_cleanup.json`` and ``onnx_cleanup.md`` to ``--out``.

    python benchmarks/onnx_cleanup/run.py --out benchmarks/results/cpu-2core

This is a benchmark, not a test: it asserts nothing; the ratios are what it reports.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from sk_deploy.bench.machine import cpu_name, load_average  # noqa: E402
from sk_deploy.bench.report import write_result  # noqa: E402
from sk_deploy.bench.timing import interleaved  # noqa: E402
from sk_deploy.bundle import tool_versions  # noqa: E402
from sk_deploy.graph.export import export_onnx  # noqa: E402
from sk_deploy.graph.passes import optimize  # noqa: E402
from sk_deploy.models.reference import build_reference, describe_weights  # noqa: E402


def variants(model_name: str, weights: dict, size: int) -> tuple[dict[str, onnx.ModelProto], dict]:
    """The graphs to compare: raw (dynamo export), onnxslim on raw, sk-deploy's cleaned, onnxsim if installed."""
    import onnxslim

    model = build_reference(model_name, weights)
    raw, info = export_onnx(model, (3, size, size), "dynamo")
    cleaned, _ = optimize(raw)
    graphs = {"cleaned": cleaned, "raw": raw, "onnxslim": onnxslim.slim(raw)}
    try:
        import onnxsim

        simplified, ok = onnxsim.simplify(raw)
        if ok:
            graphs["onnxsim"] = simplified
    except ImportError:
        pass
    return graphs, info.to_dict()


def measure(
    sessions: dict[str, ort.InferenceSession], batch: int, size: int, rounds: int, warmup: int
) -> dict[str, list[float]]:
    """Seconds per run of each session at ``batch`` on one random input, interleaved (sk_deploy.bench.timing)."""
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    return interleaved(sessions, {name: {"input": x} for name in sessions}, rounds, warmup)


def kernel_share(graph: onnx.ModelProto, options: ort.SessionOptions, batch: int, size: int, runs: int = 3,
                 tmp: Path | None = None) -> dict[str, float]:
    """Percent of ONNX Runtime kernel time per op type (ORT's profiler; after its own graph optimisations)."""
    import tempfile

    profiled = ort.SessionOptions()
    profiled.intra_op_num_threads = options.intra_op_num_threads
    profiled.inter_op_num_threads = options.inter_op_num_threads
    profiled.enable_profiling = True
    with tempfile.TemporaryDirectory(dir=tmp) as folder:
        profiled.profile_file_prefix = str(Path(folder) / "profile")
        session = ort.InferenceSession(graph.SerializeToString(), profiled, providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
        session.run(None, {"input": x})
        for _ in range(runs):
            session.run(None, {"input": x})
        events = json.loads(Path(session.end_profiling()).read_text())
    totals: Counter[str] = Counter()
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            totals[event["args"]["op_name"]] += event["dur"]
    total = sum(totals.values()) or 1
    return {op: round(100 * t / total, 1) for op, t in totals.most_common()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "cpu-2core")
    parser.add_argument("--model", default="sknet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--rounds", type=int, nargs="+", default=[80, 40], help="rounds per batch size")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="ORT intra-op threads")
    parser.add_argument("--weights", type=Path, default=None, help="checkpoint (default: random weights)")
    args = parser.parse_args()
    rounds = dict(zip(args.batches, args.rounds + [args.rounds[-1]] * len(args.batches), strict=False))

    torch.set_num_threads(args.threads)
    weights = describe_weights(args.weights)
    print(f"exporting {args.model} at {args.size}x{args.size}...", flush=True)
    graphs, export_info = variants(args.model, weights, args.size)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    sessions = {
        name: ort.InferenceSession(graph.SerializeToString(), options, providers=["CPUExecutionProvider"])
        for name, graph in graphs.items()
    }
    x = np.random.default_rng(1).standard_normal((2, 3, args.size, args.size)).astype(np.float32)
    outputs = {name: s.run(None, {"input": x})[0] for name, s in sessions.items()}
    max_abs = {name: float(np.abs(out - outputs["raw"]).max()) for name, out in outputs.items()}

    load_before = load_average()
    results: dict[str, dict] = {}
    for batch in args.batches:
        print(f"batch {batch}: {rounds[batch]} rounds...", flush=True)
        times = measure(sessions, batch, args.size, rounds[batch], args.warmup)
        medians = {name: statistics.median(t) for name, t in times.items()}
        results[str(batch)] = {
            "rounds": rounds[batch],
            "median_ms": {name: round(m * 1e3, 2) for name, m in medians.items()},
            "min_ms": {name: round(min(t) * 1e3, 2) for name, t in times.items()},
            "p10_ms": {name: round(float(np.percentile(t, 10)) * 1e3, 2) for name, t in times.items()},
            "p90_ms": {name: round(float(np.percentile(t, 90)) * 1e3, 2) for name, t in times.items()},
            "speedup_of_cleaned": {
                name: round(medians[name] / medians["cleaned"], 3) for name in medians if name != "cleaned"
            },
            "speedup_of_cleaned_min": {
                name: round(min(times[name]) / min(times["cleaned"]), 3) for name in times if name != "cleaned"
            },
        }
    profile_batch = max(args.batches)
    print(f"profiling kernels at batch {profile_batch}...", flush=True)
    shares = {name: kernel_share(graph, options, profile_batch, args.size) for name, graph in graphs.items()}
    command = "python benchmarks/onnx_cleanup/run.py " + " ".join(sys.argv[1:])
    report = {
        "benchmark": "onnx_cleanup",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command.strip(),
        "model": args.model,
        "weights": weights,
        "input": [3, args.size, args.size],
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "ort_threads": args.threads,
                    "platform": platform.platform(), "load_average_before": load_before,
                    "load_average_after": load_average()},
        "tools": tool_versions(),
        "export": export_info,
        "nodes": {name: len(graph.graph.node) for name, graph in graphs.items()},
        "ops": {name: dict(Counter(n.op_type for n in g.graph.node).most_common()) for name, g in graphs.items()},
        "max_abs_vs_raw": max_abs,
        "results": results,
        "kernel_time_percent": {"batch": profile_batch, "by_graph": shares},
    }
    print(write_result(args.out, "onnx_cleanup", report, markdown(report)))


def markdown(report: dict) -> str:
    """A short human summary of ``report``."""
    names = list(report["nodes"])
    lines = [
        f"# ONNX Runtime CPU latency: {report['model']}, cleaned vs raw vs onnxslim",
        "",
        f"Reproduce: `{report['command']}`",
        "",
        f"{report['machine']['cpu']}, {report['machine']['cores']} cores, ORT {report['tools'].get('onnxruntime')} "
        f"with {report['machine']['ort_threads']} intra-op threads, input {'x'.join(map(str, report['input']))}, "
        f"{report['weights']['source']} weights, {report['date']}. Load average before / after: "
        f"{report['machine']['load_average_before']} / {report['machine']['load_average_after']}.",
        "",
        "| graph | nodes | Softmax | Concat | max abs vs raw |"
        + "".join(f" batch {b} median ms |" for b in report["results"]),
        "| --- | ---: | ---: | ---: | ---: |" + " ---: |" * len(report["results"]),
    ]
    for name in names:
        ops = report["ops"][name]
        row = (f"| {name} | {report['nodes'][name]} | {ops.get('Softmax', 0)} | {ops.get('Concat', 0)} | "
               f"{report['max_abs_vs_raw'][name]:.1e} |")
        row += "".join(f" {r['median_ms'][name]:.1f} |" for r in report["results"].values())
        lines.append(row)
    lines += ["", "Speed-up of the cleaned graph (median of the other / median of cleaned; in brackets the same "
              "ratio of the fastest runs, which background load disturbs least):", ""]
    for batch, result in report["results"].items():
        ratios = ", ".join(f"{x:.3f}x vs {name} ({result['speedup_of_cleaned_min'][name]:.3f}x)"
                           for name, x in result["speedup_of_cleaned"].items())
        lines.append(f"- batch {batch} ({result['rounds']} interleaved rounds): {ratios}")
    profile = report["kernel_time_percent"]
    lines += ["", f"Share of ONNX Runtime kernel time at batch {profile['batch']} (percent, top op types):", ""]
    for name, shares in profile["by_graph"].items():
        top = ", ".join(f"{op} {share:.1f}" for op, share in list(shares.items())[:8])
        lines.append(f"- {name}: {top}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
