"""The standard benchmark suite on this machine, in one command.

For each model (sknet50, skresnet18, seresnet50 at 224x224): export a bundle with realistic activations (random
weights, BatchNorm statistics recomputed on photos), add its INT8 graph for ONNX Runtime CPU (calibrated on
photos; its accuracy against float32 on held-out photos is recorded beside its speed), and on a machine with a
GPU and TensorRT its FP16 and INT8 graphs and engines; then ``sk-deploy bench`` it: PyTorch eager float32 (the
baseline), torch.compile, ONNX Runtime CPU and OpenVINO on the cleaned graph and on the raw export, float32,
INT8 and (OpenVINO, on a CPU with native bfloat16) bf16, and the GPU backends where there is a GPU. Last, the
service under load: ``sk-deploy serve`` on 127.0.0.1, the ``bench-http`` concurrency sweep, stop (skipped with a
note where the service is not installed).

Writes ``benchmarks/results/<machine>/suite.json``, ``suite.md`` and PNG plots, then regenerates
``benchmarks/README.md`` from every machine's results.

    python benchmarks/suite/run.py            # full: three models, within --budget-minutes (25 on 2 cores)
    python benchmarks/suite/run.py --quick    # skresnet18 only, short durations: a check, not figures to quote

A benchmark, not a test: it asserts nothing. Steps that would pass the time budget are skipped and listed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from readme import headline, write_readme  # noqa: E402

from sk_deploy.bench.http_load import LoadConfig, LoadError, load_payloads, run_sweep  # noqa: E402
from sk_deploy.bench.latency import BenchConfig, BenchRun  # noqa: E402
from sk_deploy.bench.local_server import LocalServer, ServerError  # noqa: E402
from sk_deploy.bench.machine import describe_machine, describe_short, machine_slug  # noqa: E402
from sk_deploy.bench.plots import PlotsUnavailable, write_plots  # noqa: E402
from sk_deploy.bench.report import build_http_report, build_report, http_markdown, to_markdown  # noqa: E402
from sk_deploy.bundle import atomic_write_bytes, atomic_write_json  # noqa: E402
from sk_deploy.machine import bf16_refusal, detect_cpu, openvino_version, probe_machine  # noqa: E402

SHARED = REPO_ROOT.parent / "shared" / "data"
MODES = {
    # models, batches (CPU), warm-up s, duration s, min runs, calibration / held-out photos, load steps and seconds
    # per step, budget in minutes, models with torch.compile rows (it compiles per batch size: minutes on 2 cores)
    "full": {"models": ("sknet50", "skresnet18", "seresnet50"), "batches": (1, 8), "warmup": 1.0, "duration": 4.0,
             "min_runs": 5, "calib": 128, "holdout": 64, "concurrency": (1, 4, 16), "load_s": 8.0, "budget": 25.0,
             "compile": ("sknet50",)},
    "quick": {"models": ("skresnet18",), "batches": (1, 4), "warmup": 0.2, "duration": 0.6, "min_runs": 3,
              "calib": 16, "holdout": 16, "concurrency": (1, 4), "load_s": 2.0, "budget": 8.0, "compile": ()},
}


def log(message: str) -> None:
    """One progress line with the time since the start."""
    print(f"[{time.monotonic() - START:6.0f} s] {message}", flush=True)


START = time.monotonic()


def prepare_bundle(model: str, folder: Path, mode: dict[str, Any], args: argparse.Namespace,
                   gpu_trt: bool, notes: list[str]) -> tuple[Any, dict[str, Any]]:
    """Export ``model`` and add its precision graphs (and engines on a GPU with TensorRT); the bundle and what
    each step measured (seconds, INT8 accuracy against float32)."""
    from sk_deploy.graph.pipeline import export_bundle
    from sk_deploy.precision.pipeline import quantize_bundle
    from sk_deploy.settings.graph import ExportSettings
    from sk_deploy.settings.precision import QuantizeSettings

    info: dict[str, Any] = {}
    photos = args.bn_images if args.bn_images.is_dir() else None
    if photos is None:
        notes.append(f"{model}: no photos at {args.bn_images}: exported without --recompute-bn (random activations)")
    started = time.perf_counter()
    bundle, _ = export_bundle(ExportSettings(model=model, out=folder / model, images=photos,
                                             recompute_bn=photos is not None, verify=False))
    info["export_s"] = round(time.perf_counter() - started, 1)
    wanted = [("int8", "cpu")]
    if gpu_trt:
        wanted += [("fp16", "tensorrt"), ("int8", "tensorrt")]
    elif openvino_version():  # OpenVINO runs the TensorRT form of INT8 faster than the CPU form
        wanted.append(("int8", "tensorrt"))
    if openvino_version() and bf16_refusal(detect_cpu()) is None:
        wanted.append(("bf16", "cpu"))  # no file: the gate's figures, recorded in the manifest
    info["precision"] = {}
    for precision, target in wanted:
        if precision == "int8" and not args.calib.is_dir():
            notes.append(f"{model}: no calibration photos at {args.calib}: no {precision} {target} graph")
            continue
        log(f"{model}: {precision} graph for {target}")
        started = time.perf_counter()
        result = quantize_bundle(QuantizeSettings(
            bundle=bundle.path, precision=precision, target=target,
            images=args.calib if precision != "fp16" and args.calib.is_dir() else None,
            calib_size=mode["calib"], holdout_size=mode["holdout"], gate=False))
        key = "bf16" if precision == "bf16" else result.file
        info["precision"][key] = {"seconds": round(time.perf_counter() - started, 1),
                                  "gate_passed": result.accuracy.passed, **result.accuracy.agreement.to_dict()}
    if gpu_trt:
        from sk_deploy.engines.tensorrt import BuildRequest, build_engine

        for precision in ("fp16", "int8"):
            log(f"{model}: TensorRT {precision} engine")
            try:
                name, entry = build_engine(BuildRequest(bundle=bundle.path, precision=precision))
                info.setdefault("engines", {})[name] = {"build_s": entry["build_seconds"], "bytes": entry["bytes"]}
            except Exception as exc:  # a failed build is a note; the bench then skips that row with its reason
                notes.append(f"{model}: TensorRT {precision} engine not built: {str(exc).splitlines()[0][:200]}")
    from sk_deploy.bundle import Bundle

    return Bundle.open(bundle.path), info


def bench_model(bundle: Any, mode: dict[str, Any], compile_rows: bool, gpu: bool,
                out: Path) -> tuple[dict[str, Any], list[str]]:
    """``sk-deploy bench`` of one bundle (in this process); the report and the PNG names written."""
    backends = ["torch", "ort-cpu", "ort-cpu-raw"] + (["openvino", "openvino-raw"] if openvino_version() else [])
    if compile_rows:
        backends.append("torch-compile")
    if gpu:
        backends += ["ort-cuda", "ort-cuda-graph", "tensorrt", "tensorrt-graph"]
    precisions = ("fp32", "fp16", "int8") if gpu else ("fp32", "int8")
    if openvino_version():
        precisions += ("bf16",)  # skipped with the reason on a CPU without native bfloat16
    config = BenchConfig(backends=tuple(backends), precisions=precisions,
                         batches=(1, 8, 32) if gpu else mode["batches"], warmup_s=mode["warmup"],
                         duration_s=mode["duration"], min_runs=mode["min_runs"])
    run = BenchRun(bundle, config)

    def on_row(row: Any, cells: int) -> None:
        figure = f"p50 {row.latency.p50:.2f} ms" if row.latency else row.reason
        log(f"  {row.label}: {figure}")

    run.execute(on_row=on_row)
    command = (f"sk-deploy bench BUNDLE --backends {','.join(config.backends)} --precisions "
               f"{','.join(config.precisions)} --batch-sizes {','.join(map(str, config.batches))} --warmup-ms "
               f"{config.warmup_s * 1000:g} --duration-ms {config.duration_s * 1000:g}")
    report = build_report(run, command)
    model = report["model"]
    try:
        plots = [p.name for p in write_plots(report, out, prefix=f"{model}-")]
    except PlotsUnavailable as exc:
        log(str(exc))
        plots = []
    return report, plots


def service_load(bundle: Any, mode: dict[str, Any], images: Path | None) -> dict[str, Any]:
    """Serve ``bundle`` on loopback, sweep the load generator's concurrency levels, stop the server."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    with LocalServer(bundle.path, env=env) as server:
        try:
            server.wait_ready(180)
            config = LoadConfig(url=server.url, concurrency=mode["concurrency"], duration_s=mode["load_s"],
                                max_requests=20_000)
            payloads = load_payloads(images if images and images.is_dir() else None)
            steps = run_sweep(config, payloads, ready_timeout_s=180,
                              on_step=lambda s: log(f"  {s.concurrency} clients: {s.requests_per_s:.1f} requests/s"))
        except (LoadError, ServerError) as exc:
            return {"skipped": f"load failed: {exc}; server output: {server.output[-500:]}"}
        command = (f"sk-deploy bench-http {server.url} --concurrency {','.join(map(str, config.concurrency))} "
                   f"--duration-ms {config.duration_s * 1000:g}")
        report = build_http_report(config, steps, len(payloads), command)
        report["served"] = {"model": bundle.manifest["model"]["name"],
                            "command": shlex.join(["sk-deploy", *server.args])}
        return report


def suite_markdown(suite: dict[str, Any]) -> str:
    """suite.md: the headline, then each model's tables and plots, then the service."""
    lines = [f"# Benchmark suite: {suite['machine_slug']} ({suite['mode']} mode)", "",
             f"Reproduce: `{suite['command']}` ({suite['date']}, {suite['elapsed_s']:.0f} s; budget "
             f"{suite['budget_minutes']:g} min)", "", f"Machine: {describe_short(suite['machine'])}.", ""]
    if suite["mode"] == "quick":
        lines += ["**Quick mode**: one model, short durations, to check the suite runs; not figures to quote.", ""]
    lines += ["## Headline (median latency ratios, same run)", "", *[f"- {h}" for h in headline(suite)], ""]
    for entry in suite["models"].values():
        lines.append(to_markdown(entry["report"], entry["plots"], heading="##").rstrip())
        precision = entry["prepare"].get("precision", {})
        if precision:
            lines += ["", "Accuracy of the precision graphs against float32 on held-out photos:", ""]
            lines += [f"- {name}: cosine mean {p['cosine_mean']:.5f}, SQNR {p['sqnr_db']:.1f} dB, top-1 agreement "
                      f"{p['top1_agreement']:.0%} on {p['images']} photos" for name, p in precision.items()]
        lines.append("")
    service = suite["service"]
    if "skipped" in service:
        lines += ["## Service under load", "", f"Skipped: {service['skipped']}", ""]
    else:
        lines += [f"## Service under load ({service['served']['model']}: `{service['served']['command']}`)", "",
                  http_markdown(service, heading="###").split("\n", 2)[2]]
    lines += ["## Notes", "", *[f"- {n}" for n in suite["notes"]], ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="one model, short durations (a check of the suite)")
    parser.add_argument("--models", help="comma-separated models instead of the mode's")
    parser.add_argument("--budget-minutes", type=float, help="stop starting new steps after this (default: mode's)")
    parser.add_argument("--bn-images", type=Path, default=SHARED / "imagenet-samples",
                        help="photos for BatchNorm statistics (export --images DIR --recompute-bn)")
    parser.add_argument("--calib", type=Path, default=SHARED / "imagenet-val-1300", help="photos for INT8 calibration")
    parser.add_argument("--torch-compile", action=argparse.BooleanOptionalAction, default=None,
                        help="torch.compile rows for every model, or none (default: sknet50's in full mode, none in "
                        "quick mode)")
    parser.add_argument("--service", action=argparse.BooleanOptionalAction, default=True, help="load the service")
    parser.add_argument("--results", type=Path, default=REPO_ROOT / "benchmarks" / "results")
    parser.add_argument("--machine-name", help="results folder name (default: cpu-<N>core or nvidia-<gpu>)")
    args = parser.parse_args()
    mode_name = "quick" if args.quick else "full"
    mode = dict(MODES[mode_name])
    models = tuple(args.models.split(",")) if args.models else mode["models"]
    budget = args.budget_minutes or mode["budget"]
    deadline = START + budget * 60

    machine = describe_machine()
    slug = args.machine_name or machine_slug(machine)
    out = args.results / slug
    out.mkdir(parents=True, exist_ok=True)
    probed = probe_machine()
    gpu, gpu_trt = probed.cuda, probed.cuda and probed.tensorrt_version is not None
    notes: list[str] = []
    if not gpu:
        notes.append("no GPU on this machine: no GPU figures here (GPU rows are skipped with their reason)")
    elif not gpu_trt:
        notes.append("GPU without TensorRT: no FP16/INT8 engines; ONNX Runtime and PyTorch GPU rows only")
    log(f"{mode_name} suite on {slug}: {', '.join(models)}; budget {budget:g} min; results in {out}")
    suite: dict[str, Any] = {
        "format": "sk-deploy-suite", "format_version": 1, "mode": mode_name,
        "command": "python benchmarks/suite/run.py" + (" " + shlex.join(sys.argv[1:]) if sys.argv[1:] else ""),
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine_slug": slug, "machine": machine,
        "budget_minutes": budget, "models": {}, "service": {"skipped": "not run"}, "notes": notes,
    }
    with tempfile.TemporaryDirectory(prefix="sk-deploy-suite-") as tmp:
        bundles = {}
        for model in models:
            if time.monotonic() > deadline:
                notes.append(f"{model}: skipped, the suite's {budget:g} min budget was spent")
                continue
            log(f"{model}: export")
            bundle, prepared = prepare_bundle(model, Path(tmp), mode, args, gpu_trt, notes)
            bundles[model] = bundle
            log(f"{model}: bench")
            compile_rows = model in mode["compile"] if args.torch_compile is None else args.torch_compile
            report, plots = bench_model(bundle, mode, compile_rows, gpu, out)
            suite["models"][model] = {"prepare": prepared, "report": report, "plots": plots}
        if not args.service:
            suite["service"] = {"skipped": "--no-service"}
        elif time.monotonic() > deadline:
            suite["service"] = {"skipped": f"the suite's {budget:g} min budget was spent"}
        elif bundles:
            served = "skresnet18" if "skresnet18" in bundles else next(iter(bundles))
            log(f"service under load: {served}")
            suite["service"] = service_load(bundles[served], mode, args.calib)
    suite["elapsed_s"] = round(time.monotonic() - START, 1)
    atomic_write_json(out / "suite.json", suite)
    atomic_write_bytes(out / "suite.md", suite_markdown(suite).encode())
    readme = write_readme(args.results, REPO_ROOT / "benchmarks" / "README.md")
    log(f"wrote {out / 'suite.json'}, {out / 'suite.md'} and {readme} in {suite['elapsed_s']:.0f} s")
    for line in headline(suite):
        print(f"  {line}")


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted: suite.json and the README were not written (run it again; sk-deploy bench keeps "
              "partial reports of a single bundle)", file=sys.stderr)
        sys.exit(130)
