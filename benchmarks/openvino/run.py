"""The CPU path a CPU user would pick: SKNet-50 at 224 on every CPU row side by side, in one process.

Rows: PyTorch eager fp32; ONNX Runtime fp32 on the cleaned graph (sk-deploy's ONNX Runtime path) and on the CPU
INT8 form; OpenVINO with f32 pinned on the cleaned graph and on the raw export; OpenVINO's own default on the
raw export (no configuration at all: what a user of OpenVINO runs; on a CPU with native bfloat16 that is bf16);
OpenVINO bf16 on the cleaned graph; OpenVINO int8 on both INT8 graphs of the bundle. Every row runs once per
round, in a rotating order, rounds interleaved, so drift and the other users of the machine hit every row alike;
the figures are medians over the rounds. Also: the first and second start of a compiled model (CACHE_DIR), and
the accuracy of bf16 and int8 against fp32 on held-out photos from the bundle's manifest.

On a CPU without native bfloat16 the bf16 rows are skipped, and the report says so.

    python benchmarks/openvino/run.py --out benchmarks/results/cpu-2core

A benchmark, not a test: it asserts nothing; the ratios against its own rows are what it reports.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from sk_deploy.bench.machine import describe_machine, load_average  # noqa: E402
from sk_deploy.bench.report import write_result  # noqa: E402
from sk_deploy.bench.timing import interleaved_calls  # noqa: E402
from sk_deploy.bundle import Bundle  # noqa: E402
from sk_deploy.machine import BackendUnavailable, bf16_refusal, detect_cpu, import_openvino  # noqa: E402
from sk_deploy.runtime.openvino_backend import OpenVinoBackend, OpenVinoOptions, precision_name  # noqa: E402
from sk_deploy.runtime.predictor import Predictor  # noqa: E402

SHARED = REPO_ROOT.parent / "shared" / "data"
BASE = "ort-fp32-cleaned"  # today's ONNX Runtime path
OV_DEFAULT = "openvino-default-raw"  # what an OpenVINO user runs
# (row, what it is, whether sk-deploy serves it: the rows the "fastest sk-deploy CPU row" is taken from)
ROWS = {
    "torch-eager-fp32": ("PyTorch eager fp32 (the network the bundle came from)", False),
    BASE: ("ONNX Runtime, cleaned graph, fp32 (`--backend ort-cpu`)", True),
    "ort-int8-cpu": ("ONNX Runtime, `model.int8-cpu.onnx` (`--backend ort-cpu --precision int8`)", True),
    "openvino-f32-raw": ("OpenVINO, raw export, f32 pinned", False),
    "openvino-f32-cleaned": ("OpenVINO, cleaned graph, f32 pinned (`--backend openvino`)", True),
    OV_DEFAULT: ("OpenVINO's own default, raw export (no configuration)", False),
    "openvino-bf16-raw": ("OpenVINO, raw export, bf16 pinned", False),
    "openvino-bf16-cleaned": ("OpenVINO, cleaned graph, bf16 (`--backend openvino --precision bf16`)", True),
    "openvino-int8-trt-form": ("OpenVINO, `model.int8.onnx` (symmetric Q/DQ), float parts f32", True),
    "openvino-int8-cpu-form": ("OpenVINO, `model.int8-cpu.onnx` (U8S8 Q/DQ), float parts f32", True),
}


def prepare_bundle(args: argparse.Namespace, out: Path) -> Bundle:
    """SKNet-50 at 224 with realistic activations and its two INT8 graphs, exported into ``out``."""
    from sk_deploy.graph.pipeline import export_bundle
    from sk_deploy.precision.pipeline import quantize_bundle
    from sk_deploy.settings.graph import ExportSettings
    from sk_deploy.settings.precision import QuantizeSettings

    print("exporting sknet50 (BatchNorm statistics on photos)...", flush=True)
    bundle, _ = export_bundle(ExportSettings(model="sknet50", out=out, images=args.bn_images,
                                             recompute_bn=args.bn_images is not None, verify=False))
    for target in ("cpu", "tensorrt"):
        print(f"int8 graph for {target}...", flush=True)
        quantize_bundle(QuantizeSettings(bundle=bundle.path, precision="int8", target=target, images=args.calib,
                                        calib_size=128, holdout_size=64, gate=False))
    return Bundle.open(bundle.path)


def add_bf16_gate(bundle: Bundle, calib: Path | None) -> None:
    """``sk-deploy quantize --precision bf16`` when the bundle has no bf16 figures and the CPU can run it."""
    from sk_deploy.precision.pipeline import quantize_bundle
    from sk_deploy.settings.precision import QuantizeSettings

    if "bf16" in bundle.manifest["stages"].get("precision", {}) or bf16_refusal(detect_cpu()):
        return
    print("bf16 gate against fp32 on held-out photos...", flush=True)
    quantize_bundle(QuantizeSettings(bundle=bundle.path, precision="bf16", images=calib, holdout_size=64, gate=False))


def open_rows(bundle: Bundle, threads: int) -> tuple[dict[str, Any], dict[str, str], dict[str, dict[str, Any]]]:
    """Each row's runner (``run(batch) -> logits``), the rows skipped and why, and what each row compiled to."""
    ov = import_openvino()
    options = OpenVinoOptions(threads=threads)
    raw = bundle.check_file("model.raw.onnx")
    int8 = {name: bundle.path / name for name in ("model.int8.onnx", "model.int8-cpu.onnx")}

    def predictor(backend: str, precision: str) -> Callable[[], Any]:
        return lambda: Predictor(bundle, backend, precision, openvino=options)

    def openvino(path: Path, precision: str) -> Callable[[], Any]:
        return lambda: OpenVinoBackend(path, bundle, precision=precision, options=options)

    def default() -> Any:
        compiled = ov.Core().compile_model(str(raw), "CPU")  # no configuration: OpenVINO's own choices
        request = compiled.create_infer_request()
        runner = type("OpenVinoDefault", (), {})()
        runner.run = lambda batch: request.infer({0: batch})[0]
        runner.compiled_precision = precision_name(compiled.get_property("INFERENCE_PRECISION_HINT"))
        runner.description = (f"OpenVINO default: {runner.compiled_precision}, hint "
                              f"{compiled.get_property('PERFORMANCE_HINT')}, "
                              f"{compiled.get_property('INFERENCE_NUM_THREADS')} threads")
        runner.close = lambda: None
        return runner

    makers: dict[str, Callable[[], Any]] = {
        "torch-eager-fp32": predictor("torch", "fp32"), BASE: predictor("ort-cpu", "fp32"),
        "ort-int8-cpu": predictor("ort-cpu", "int8"), "openvino-f32-raw": openvino(raw, "fp32"),
        "openvino-f32-cleaned": predictor("openvino", "fp32"), OV_DEFAULT: default,
        "openvino-bf16-raw": openvino(raw, "bf16"), "openvino-bf16-cleaned": predictor("openvino", "bf16"),
        "openvino-int8-trt-form": openvino(int8["model.int8.onnx"], "int8"),
        "openvino-int8-cpu-form": openvino(int8["model.int8-cpu.onnx"], "int8"),
    }
    runners, skipped, compiled = {}, {}, {}
    for name, make in makers.items():
        try:
            runner = make()
        except (BackendUnavailable, FileNotFoundError, OSError) as exc:
            skipped[name] = str(exc).splitlines()[0]
            continue
        runners[name] = runner
        inner = getattr(runner, "_runner", runner)
        compiled[name] = {"description": getattr(runner, "description", name),
                          "compiled_precision": getattr(inner, "compiled_precision", None),
                          "runtime": getattr(inner, "description", None)}
    return runners, skipped, compiled


def startup_seconds(path: Path, precision: str) -> dict[str, float]:
    """Seconds to open the OpenVINO backend without a cache, then twice with a fresh one (compile, import)."""
    out = {}
    with tempfile.TemporaryDirectory(prefix="ov-cache-") as cache:
        for label, folder in (("no_cache", ""), ("first_with_cache", cache), ("second_with_cache", cache)):
            start = time.perf_counter()
            OpenVinoBackend(path, precision=precision, options=OpenVinoOptions(cache_dir=folder)).close()
            out[label] = round(time.perf_counter() - start, 3)
    return out


def measure(runners: dict[str, Any], batch: int, rounds: int, warmup: int) -> dict[str, dict[str, float]]:
    """Median, p10 and p90 ms per row at ``batch``, interleaved rounds."""
    x = np.random.default_rng(0).standard_normal((batch, 3, 224, 224), dtype=np.float32)
    calls = {name: _call(runner, x) for name, runner in runners.items()}
    times = interleaved_calls(calls, rounds, warmup)
    out = {}
    for name, seconds in times.items():
        ms = sorted(s * 1000 for s in seconds)
        out[name] = {"median_ms": round(statistics.median(ms), 3), "p10_ms": round(ms[len(ms) // 10], 3),
                     "p90_ms": round(ms[(len(ms) * 9) // 10], 3), "rounds": len(ms),
                     "images_per_s": round(batch * 1000 / statistics.median(ms), 2)}
    return out


def _call(runner: Any, x: np.ndarray) -> Callable[[], object]:
    run = runner.predict if hasattr(runner, "predict") else runner.run
    return lambda: run(x)


def summary(batches: dict[int, dict[str, dict[str, float]]]) -> dict[int, dict[str, Any]]:
    """Per batch: the fastest sk-deploy row and its speed-up over ONNX Runtime fp32 and OpenVINO's default."""
    out: dict[int, dict[str, Any]] = {}
    for batch, rows in batches.items():
        served = {name: r for name, r in rows.items() if ROWS[name][1]}
        best = min(served, key=lambda name: served[name]["median_ms"])
        entry: dict[str, Any] = {"fastest": best, "fastest_ms": served[best]["median_ms"]}
        for key, ref in (("vs_ort_fp32_cleaned", BASE), ("vs_openvino_default_raw", OV_DEFAULT)):
            entry[key] = round(rows[ref]["median_ms"] / served[best]["median_ms"], 3) if ref in rows else None
        if "openvino-bf16-raw" in rows and "openvino-bf16-cleaned" in rows:
            entry["cleanup_gain_openvino_bf16"] = round(rows["openvino-bf16-raw"]["median_ms"]
                                                        / rows["openvino-bf16-cleaned"]["median_ms"], 3)
        if "openvino-f32-raw" in rows and "openvino-f32-cleaned" in rows:
            entry["cleanup_gain_openvino_f32"] = round(rows["openvino-f32-raw"]["median_ms"]
                                                       / rows["openvino-f32-cleaned"]["median_ms"], 3)
        int8 = {n: rows[n]["median_ms"] for n in ("openvino-int8-trt-form", "openvino-int8-cpu-form") if n in rows}
        if int8:
            entry["openvino_int8_fastest_graph"] = min(int8, key=int8.__getitem__)
        out[batch] = entry
    return out


def markdown(result: dict[str, Any]) -> str:
    """The report for people."""
    machine, cpu = result["machine"], result["cpu"]
    lines = ["# The CPU path: SKNet-50 at 224 on ONNX Runtime, OpenVINO and PyTorch, side by side", "",
             f"{result['date']}; {machine['cpu']}, {machine.get('cores')} cores; CPU flags that decide precisions: "
             f"{', '.join(cpu['flags']) or 'none'}; native bf16: **{'yes' if cpu['native_bf16'] else 'no'}**. "
             f"Libraries: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()) + ".", "",
             f"Load average before / after: {result['load_before']} / {result['load_after']} (the machine is shared: "
             "every row runs once per round, rounds interleaved, so load hits them alike; medians over rounds).", ""]
    if not cpu["native_bf16"]:
        default = result["compiled"].get(OV_DEFAULT, {}).get("compiled_precision") or "not run"
        lines += [f"**This CPU has no native bfloat16** ({cpu['refusal']}): the bf16 rows were not run; OpenVINO's "
                  f"default on the raw export compiled to {default} here.", ""]
    batches = sorted(result["batches"], key=int)
    head = "| row | " + " | ".join(f"batch {b} median ms (p10-p90)" for b in batches) + " | compiled |"
    lines += [head, "| --- | " + " | ".join("---:" for _ in batches) + " | --- |"]
    for name, (about, _) in ROWS.items():
        if name in result["skipped"]:
            dashes = " | ".join("-" for _ in batches)
            lines.append(f"| {about} | {dashes} | skipped: {result['skipped'][name]} |")
            continue
        cells = []
        for b in batches:
            r = result["batches"][b][name]
            cells.append(f"{r['median_ms']:.1f} ({r['p10_ms']:.1f}-{r['p90_ms']:.1f})")
        compiled = result["compiled"][name]["compiled_precision"] or "-"
        lines.append(f"| {about} | {' | '.join(cells)} | {compiled} |")
    lines += ["", "## What it shows", ""]
    for b in batches:
        s = result["summary"][b]
        vs_ov = f"{s['vs_openvino_default_raw']:.2f}x" if s["vs_openvino_default_raw"] else "n/a"
        line = (f"- batch {b}: sk-deploy's fastest CPU row is **{ROWS[s['fastest']][0]}** at {s['fastest_ms']:.1f} ms: "
                f"**{s['vs_ort_fp32_cleaned']:.2f}x** ONNX Runtime fp32 on the cleaned graph (target 2.3x) and "
                f"**{vs_ov}** OpenVINO's own default on the raw export (target 1.2x).")
        if "cleanup_gain_openvino_bf16" in s:
            line += f" The SK cleanup on OpenVINO bf16: raw / cleaned = {s['cleanup_gain_openvino_bf16']:.2f}x"
            line += f"; at f32 {s['cleanup_gain_openvino_f32']:.2f}x." if "cleanup_gain_openvino_f32" in s else "."
        if "openvino_int8_fastest_graph" in s:
            line += f" OpenVINO's faster int8 graph: {ROWS[s['openvino_int8_fastest_graph']][0]}."
        lines.append(line)
    start = result["startup"]
    if start:
        lines += ["", f"Start of the OpenVINO backend ({start['file']}, {start['precision']}): "
                  f"{start['seconds']['no_cache']:.2f} s without a cache, "
                  f"{start['seconds']['first_with_cache']:.2f} s the first time with CACHE_DIR (compile and store), "
                  f"{start['seconds']['second_with_cache']:.2f} s the second (import)."]
    if result["accuracy"]:
        lines += ["", "Accuracy against fp32 on held-out photos (from the bundle's manifest, `sk-deploy quantize`; "
                  "random weights with BatchNorm statistics from photos):", ""]
        lines += [f"- {k}: mean cosine {a['cosine_mean']:.5f}, SQNR {a['sqnr_db']:.1f} dB, gate "
                  f"{'passed' if a['passed'] else 'failed'}" for k, a in result["accuracy"].items()]
    lines += ["", "Reproduce:", "", f"    {result['command']}", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, help="an SKNet-50 bundle with both INT8 graphs to reuse, or where to "
                        "make one (default: a temporary one)")
    parser.add_argument("--bn-images", type=Path, default=SHARED / "imagenet-samples")
    parser.add_argument("--calib", type=Path, default=SHARED / "imagenet-val-1300")
    parser.add_argument("--rounds", type=int, default=60, help="interleaved rounds at batch 1 (a third at batch 8)")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="OpenVINO threads (0: one per core)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks/results/cpu-2core")
    args = parser.parse_args()
    command = "python " + " ".join([str(Path(sys.argv[0]).resolve().relative_to(REPO_ROOT)), *sys.argv[1:]])
    cpu = detect_cpu()
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="sk-openvino-") as tmp:
        if args.bundle and (args.bundle / "manifest.json").is_file():
            bundle = Bundle.open(args.bundle)
        else:
            bundle = prepare_bundle(args, args.bundle or Path(tmp) / "sknet50")
        add_bf16_gate(bundle, args.calib if args.calib.is_dir() else None)
        bundle = Bundle.open(bundle.path)
        runners, skipped, compiled = open_rows(bundle, args.threads)
        try:
            batches = {}
            for batch, rounds in ((1, args.rounds), (8, max(5, args.rounds // 3))):
                print(f"batch {batch}: {rounds} interleaved rounds of {len(runners)} rows...", flush=True)
                batches[batch] = measure(runners, batch, rounds, args.warmup)
        finally:
            for runner in runners.values():
                runner.close()
        precision = "bf16" if cpu.native_bf16 else "fp32"
        startup = {"file": "model.onnx", "precision": precision,
                   "seconds": startup_seconds(bundle.path / "model.onnx", precision)}
        stages = bundle.manifest["stages"].get("precision", {})
        accuracy = {key: stages[key]["accuracy"] for key in ("bf16", "model.int8.onnx", "model.int8-cpu.onnx")
                    if key in stages}
    machine = describe_machine()
    result = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "command": command, "machine": machine,
        "cpu": {"name": cpu.name, "flags": cpu.reported(), "native_bf16": cpu.native_bf16,
                "refusal": bf16_refusal(cpu)},
        "versions": {k: v for k, v in machine["libraries"].items() if k in ("torch", "onnxruntime", "openvino")},
        "load_before": load_before, "load_after": load_average(), "rows": {k: v[0] for k, v in ROWS.items()},
        "skipped": skipped, "compiled": compiled, "batches": batches, "summary": summary(batches),
        "startup": startup, "accuracy": accuracy,
    }
    print(write_result(args.out, "openvino", result, markdown(result)))


if __name__ == "__main__":
    started = time.perf_counter()
    main()
    print(f"took {time.perf_counter() - started:.0f} s")
