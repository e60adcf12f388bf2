"""Service overhead: HTTP throughput of ``sk-deploy serve`` against the Predictor's own, same bundle, same batch.

One run, on one machine: export SKNet-50 (or take ``--bundle``), open the Predictor as ``sk-deploy serve`` would (by
default ``--backend auto --precision auto``: what a plain ``serve`` serves on this machine, recorded with the
reasons), start ``sk-deploy serve`` on 127.0.0.1 with that backend and precision and ``--max-batch B``, sweep the
concurrency levels with the load generator of ``sk-deploy bench-http`` (real photos as raw JPEG bodies), take the
level with the most answered pictures per second, then alternate ``--repeats`` times: the Predictor alone at batch B
in this process (the server idle), and HTTP at the best level (the Predictor idle). The ratio is HTTP pictures/s
over Predictor pictures/s, per repeat; the figure is the median. The load generator runs on the same cores as the
server, so its own cost counts against HTTP. Writes ``service.json`` and ``service.md`` to ``--out``
(``service-BACKEND-PRECISION`` for a backend or precision asked).

    python benchmarks/service/run.py --images ../shared/data/imagenet-val-1300 --out benchmarks/results/cpu-2core
    python benchmarks/service/run.py --backend openvino --precision bf16     # -> service-openvino-bf16.{json,md}

A benchmark, not a test: it asserts nothing; the ratio and the percentiles are what it reports.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from sk_deploy.bench.http_load import LoadConfig, load_payloads, run_sweep  # noqa: E402
from sk_deploy.bench.local_server import LocalServer  # noqa: E402
from sk_deploy.bench.machine import describe_machine, load_average  # noqa: E402
from sk_deploy.bench.report import write_result  # noqa: E402
from sk_deploy.bench.stats import summarize  # noqa: E402
from sk_deploy.bench.timing import timed_loop  # noqa: E402
from sk_deploy.bundle import Bundle  # noqa: E402
from sk_deploy.graph.pipeline import export_bundle  # noqa: E402
from sk_deploy.images import find_images, load_batch  # noqa: E402
from sk_deploy.machine import BackendUnavailable  # noqa: E402
from sk_deploy.runners import onnx_cpu_runner  # noqa: E402
from sk_deploy.runtime.predictor import Predictor  # noqa: E402
from sk_deploy.settings.graph import ExportSettings  # noqa: E402


def predictor_throughput(predictor: Predictor, batch: Any, seconds: float) -> dict[str, float]:
    """Pictures per second and latency percentiles of the Predictor on ``batch``, back to back."""
    def run() -> None:
        predictor.predict(batch)

    loop = timed_loop(run, seconds, min_runs=3)
    stats = summarize(loop.ms)
    return {"images_per_s": len(batch) * len(loop.ms) / loop.seconds, "p50_ms": stats.p50, "p99_ms": stats.p99,
            "runs": len(loop.ms)}


def http_step(url: str, payloads: list, concurrency: int, seconds: float) -> dict[str, Any]:
    """One load step at ``concurrency``: pictures/s answered, statuses, latency percentiles, server batches."""
    [step] = run_sweep(LoadConfig(url=url, concurrency=(concurrency,), duration_s=seconds, timeout_s=120),
                       payloads, ready_timeout_s=300)
    return step.to_dict()


def markdown(result: dict[str, Any]) -> str:
    """The report for people."""
    best, b = result["best_concurrency"], result["max_batch"]
    each = ", ".join(f"{r['ratio']:.0%}" for r in result["repeats"])
    lines = [
        f"# Service overhead: HTTP vs the Predictor ({result['backend']} {result['precision']})", "",
        f"Machine: {result['machine']['cpu']} ({result['machine']['cores']} cores), {result['date']}. "
        f"Model: {result['model']} at {result['input']}, {result['weights']} weights, backend "
        f"{result['ran']}. Load average before / after: {result['load_before']} / {result['load_after']}. "
        f"Photos: {result['pictures']} real JPEGs as raw bodies.", "",
        f"Asked `--backend {result['asked'][0]} --precision {result['asked'][1]}`: "
        f"{result['why']['precision']['reason']}; served on {result['backend']}: {result['why']['backend']}.", "",
        f"**HTTP reaches {result['ratio_median']:.0%} of the Predictor's throughput at batch {b}** (median of "
        f"{len(result['repeats'])} alternating repeats at concurrency {best}; each repeat: "
        f"{each}).", "",
        "## Concurrency sweep", "",
        "| concurrency | pictures/s | p50 ms | p90 ms | p99 ms | statuses | mean server batch |",
        "| ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for step in result["sweep"]:
        lat = step["latency_ms"] or {}
        server = step.get("server") or {}
        lines.append(f"| {step['concurrency']} | {step['ok_per_s']:.2f} | {lat.get('p50', 0):.0f} | "
                     f"{lat.get('p90', 0):.0f} | {lat.get('p99', 0):.0f} | {step['statuses']} | "
                     f"{server.get('mean_batch_size') or 0:.1f} |")
    lines += ["", f"## Repeats at concurrency {best}", "",
              f"| repeat | Predictor pictures/s (batch {b}) | HTTP pictures/s | ratio | HTTP p50 ms | HTTP p99 ms | "
              "mean server batch |", "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for i, r in enumerate(result["repeats"], 1):
        lat = r["http"]["latency_ms"] or {}
        server = r["http"].get("server") or {}
        lines.append(f"| {i} | {r['predictor']['images_per_s']:.2f} | {r['http']['ok_per_s']:.2f} | "
                     f"{r['ratio']:.3f} | {lat.get('p50', 0):.0f} | {lat.get('p99', 0):.0f} | "
                     f"{server.get('mean_batch_size') or 0:.1f} |")
    lines += ["", "Reproduce:", "", f"    {result['command']}", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, help="bundle to serve (default: export --model into a temp dir)")
    parser.add_argument("--model", default="sknet50")
    parser.add_argument("--images", type=Path, default=REPO_ROOT.parent / "shared/data/imagenet-val-1300")
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--concurrency", default="8,32,64")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per step")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--backend", default="auto", help="the backend served and measured (default: serve's)")
    parser.add_argument("--precision", default="auto", help="the precision served (default: serve's)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks/results/cpu-2core")
    args = parser.parse_args()
    stem = "service" if (args.backend, args.precision) == ("auto", "auto") else \
        f"service-{args.backend}-{args.precision}"
    load_before = load_average()
    command = "python " + " ".join([str(Path(sys.argv[0]).resolve().relative_to(REPO_ROOT)), *sys.argv[1:]])

    with tempfile.TemporaryDirectory() as tmp:
        if args.bundle is None:
            print(f"exporting {args.model}...", flush=True)
            bundle, _ = export_bundle(ExportSettings(model=args.model, out=Path(tmp) / args.model),
                                      onnx_runner=onnx_cpu_runner)
        else:
            bundle = Bundle.open(args.bundle)
        payloads = load_payloads(args.images, limit=64)
        photos = find_images(args.images)[: args.max_batch]
        batch = load_batch(photos, bundle.preprocess,
                           uint8_nhwc=bundle.manifest["input"]["dtype"] == "uint8")
        try:
            predictor = Predictor(bundle, args.backend, args.precision)
        except BackendUnavailable as exc:
            raise SystemExit(f"--backend {args.backend} --precision {args.precision}: {exc}") from None
        print(f"serving {predictor.description}: {predictor.precision_choice.reason}", flush=True)
        predictor.warmup((1, args.max_batch))
        # the server is pinned to what the Predictor chose, so both sides of the ratio run the same graph
        server = LocalServer(bundle.path, "--backend", predictor.backend, "--precision", predictor.precision,
                             "--max-batch", str(args.max_batch), "--timeout-ms", "120000", "--max-queue", "4096",
                             "--no-access-log")
        try:
            server.wait_ready(300)
            sweep = []
            for level in (int(c) for c in args.concurrency.split(",")):
                print(f"HTTP at concurrency {level} for {args.duration:g} s...", flush=True)
                sweep.append(http_step(server.url, payloads, level, args.duration))
            best = max(sweep, key=lambda s: s["ok_per_s"])["concurrency"]
            repeats = []
            for i in range(args.repeats):
                print(f"repeat {i + 1}/{args.repeats}: Predictor at batch {args.max_batch}, then HTTP at {best}...",
                      flush=True)
                alone = predictor_throughput(predictor, batch, args.duration)
                http = http_step(server.url, payloads, best, args.duration)
                repeats.append({"predictor": alone, "http": http, "ratio": http["ok_per_s"] / alone["images_per_s"]})
        finally:
            server.stop()
            predictor.close()
        result = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "command": command,
            "machine": describe_machine(),
            "model": bundle.model_name, "input": "x".join(map(str, bundle.manifest["input"]["shape"][1:])),
            "weights": bundle.manifest["model"]["weights"]["source"], "asked": [args.backend, args.precision],
            "backend": predictor.backend, "precision": predictor.precision, "ran": predictor.description,
            "why": {"backend": predictor.reason, "precision": predictor.precision_choice.to_dict()},
            "load_before": load_before, "load_after": load_average(),
            "max_batch": args.max_batch, "pictures": len(payloads), "sweep": sweep, "best_concurrency": best,
            "repeats": repeats, "ratio_median": statistics.median(r["ratio"] for r in repeats),
        }
    print(write_result(args.out, stem, result, markdown(result)))


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"took {time.perf_counter() - start:.0f} s")
