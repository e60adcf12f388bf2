"""The default path against what a user would run instead: SKNet-50 at 224, batch 1 and 8, each runner alone in a
process of its own, rounds alternating (the runners in a rotating order), medians over the rounds.

Runners:
- ``default``: ``Predictor(bundle)`` with no arguments, on a bundle from a plain ``sk-deploy export sknet50``
  (which measures the bf16 gate itself on a CPU with native bfloat16, so the default may serve bf16 there);
- ``openvino-zero-config``: ``core.compile_model(model.raw.onnx, "CPU")`` with no configuration, OpenVINO's own
  default on the raw export (bf16, chosen silently, on a CPU with native bfloat16);
- ``ort-fp32-raw``: ONNX Runtime's CPU provider, default session options, on the raw export;
- ``openvino-int8``: ``Predictor(bundle, "openvino", "int8")`` on the bundle once gated int8 graphs are added
  (``sk-deploy quantize --precision int8`` for both targets, on photos);
- ``default-with-int8``: ``Predictor(bundle)`` with no arguments on that bundle.

Also this CPU's int8 and fp32 matrix rates (``matrix_rate.py``, in its own process each round), against which the
int8 path's effective rate (SKNet-50's operations per second) is reported. In one process the runtimes' spinning
threads disturb each other's timings, hence a process per runner and round.

    python benchmarks/default_path/run.py --calib ../shared/data/imagenet-val-1300 --out benchmarks/results/cpu-2core

A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from sk_deploy.bench.machine import describe_machine, load_average  # noqa: E402
from sk_deploy.bench.report import write_result  # noqa: E402
from sk_deploy.bundle import Bundle  # noqa: E402
from sk_deploy.machine import detect_cpu  # noqa: E402
from sk_deploy.precisions import Precision  # noqa: E402

HERE = Path(__file__).resolve().parent
RUNNERS = {
    "default": "sk-deploy default: `Predictor(bundle)`, plain `sk-deploy export sknet50`",
    "openvino-zero-config": "OpenVINO with no configuration, raw export",
    "ort-fp32-raw": "ONNX Runtime fp32, raw export",
    "openvino-int8": "sk-deploy openvino int8 (`Predictor(bundle, \"openvino\", \"int8\")`)",
    "default-with-int8": "sk-deploy default once gated int8 graphs are in the bundle",
}
ZERO_CONFIG, ORT_RAW = "openvino-zero-config", "ort-fp32-raw"
ENV = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}


def sk_deploy(*args: str) -> str:
    """Run the command line (this tree's), returning its stderr; a failure stops the benchmark with its output."""
    run = subprocess.run([sys.executable, "-m", "sk_deploy", *args], capture_output=True, text=True, env=ENV)
    if run.returncode:
        raise SystemExit(f"sk-deploy {' '.join(args)} failed:\n{run.stdout}\n{run.stderr}")
    return run.stderr


def prepare(work: Path, calib: Path, calib_size: int, reuse: bool) -> dict[str, Any]:
    """The plain bundle (``sk-deploy export sknet50``) and a copy with gated int8 graphs; what each step said."""
    plain, int8 = work / "plain", work / "int8"
    record = work / "prepared.json"  # what the commands said, kept for a --reuse run
    said: dict[str, Any] = json.loads(record.read_text()) if reuse and record.is_file() else {}
    if not (reuse and (plain / "manifest.json").is_file()):
        print("sk-deploy export sknet50 ...", flush=True)
        said["export"] = sk_deploy("export", "sknet50", "--out", str(plain), "--force").strip().splitlines()
    if not (reuse and (int8 / "model.int8.onnx").is_file()):
        shutil.rmtree(int8, ignore_errors=True)
        shutil.copytree(plain, int8)
        for target in ("cpu", "tensorrt"):
            print(f"sk-deploy quantize --precision int8 --target {target} ...", flush=True)
            said[f"quantize_{target}"] = sk_deploy("quantize", str(int8), "--precision", "int8", "--target", target,
                                                   "--images", str(calib), "--calib-size", str(calib_size)
                                                   ).strip().splitlines()
    record.write_text(json.dumps(said, indent=1))
    stages = Bundle.open(int8).stage("precision")
    said["int8_gates"] = {name: {"accuracy": entry.get("accuracy"), "speed": entry.get("speed"),
                                 "backends": entry.get("backends")} for name, entry in stages.items()}
    said["plain_bf16_gate"] = Bundle.open(plain).stage("precision").get("bf16")
    return said


# ---- one runner, in its own process ---------------------------------------------------------------------------


def _open(name: str, work: Path) -> tuple[Any, dict[str, Any]]:
    """(run(batch) -> logits, what it is) for runner ``name``."""
    if name in ("default", "openvino-int8", "default-with-int8"):
        from sk_deploy.runtime.predictor import Predictor

        bundle = work / ("plain" if name == "default" else "int8")
        predictor = Predictor(bundle, "openvino", "int8") if name == "openvino-int8" else Predictor(bundle)
        return predictor.predict, {"description": predictor.description, "precision": predictor.precision,
                                   "backend": predictor.backend, "backend_reason": predictor.reason,
                                   "precision_reason": predictor.precision_choice.reason,
                                   "runtime": getattr(predictor._runner, "description", None)}
    raw = str(work / "plain" / "model.raw.onnx")
    if name == ZERO_CONFIG:
        import openvino as ov

        from sk_deploy.runtime.openvino_backend import precision_name

        compiled = ov.Core().compile_model(raw, "CPU")  # no configuration at all: what an OpenVINO user runs
        request = compiled.create_infer_request()
        return (lambda x: request.infer({0: x})[0]), {
            "description": "OpenVINO default", "compiled_precision":
            precision_name(compiled.get_property("INFERENCE_PRECISION_HINT")),
            "hint": str(compiled.get_property("PERFORMANCE_HINT")),
            "threads": int(compiled.get_property("INFERENCE_NUM_THREADS"))}
    import onnxruntime as ort

    session = ort.InferenceSession(raw, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    return (lambda x: session.run(None, {input_name: x})[0]), {"description": "ONNX Runtime default session"}


def child(name: str, work: Path, batches: list[int], seconds: float, min_runs: int) -> dict[str, Any]:
    """Open runner ``name``, warm it, and time each batch size for about ``seconds`` (at least ``min_runs``)."""
    start = time.perf_counter()
    run, info = _open(name, work)
    info["open_s"] = round(time.perf_counter() - start, 2)
    out: dict[str, Any] = {"runner": name, **info, "batches": {}}
    for batch in batches:
        x = np.random.default_rng(batch).standard_normal((batch, 3, 224, 224), dtype=np.float32)
        for _ in range(2):
            run(x)
        times: list[float] = []
        end = time.perf_counter() + seconds
        while time.perf_counter() < end or len(times) < min_runs:
            t0 = time.perf_counter()
            run(x)
            times.append((time.perf_counter() - t0) * 1e3)
        out["batches"][str(batch)] = {"median_ms": round(statistics.median(times), 3), "runs": len(times)}
    return out


def in_process(args: list[str]) -> dict[str, Any]:
    """Run a child (this script with ``args``, or matrix_rate.py) and read the JSON it prints last."""
    run = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=ENV)
    if run.returncode:
        raise SystemExit(f"{' '.join(args)} failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


# ---- the side-by-side -----------------------------------------------------------------------------------------


def sknet50_gops_per_picture() -> float:
    """SKNet-50's operations per picture at 224 (2 per multiply-add), counted on the network."""
    from sk_deploy.models import create_model
    from sk_deploy.models.profile import count_macs

    return 2 * count_macs(create_model("sknet50"), (3, 224, 224)) / 1e9


def summarise(rounds: list[dict[str, Any]], batches: list[int], gops: float) -> dict[str, Any]:
    """Medians over rounds per runner and batch, ratios against OpenVINO's zero-config and ONNX Runtime fp32, and
    the int8 paths' effective rate against the measured matrix rates."""
    medians: dict[str, dict[str, float]] = {}
    for name in RUNNERS:
        medians[name] = {str(b): round(statistics.median(r["runners"][name]["batches"][str(b)]["median_ms"]
                                                         for r in rounds), 3) for b in batches}
    rates: dict[str, float] = {}
    for key in rounds[0]["matrix"]["rates"]:
        rates[key] = round(statistics.median(r["matrix"]["rates"][key]["gops"] for r in rounds), 1)
    ratios = {name: {b: {"vs_openvino_zero_config": round(medians[ZERO_CONFIG][b] / ms, 3),
                         "vs_ort_fp32_raw": round(medians[ORT_RAW][b] / ms, 3)} for b, ms in row.items()}
              for name, row in medians.items()}
    best_int8 = max(v for k, v in rates.items() if "int8" in k and "conv" in k)
    best_fp32 = max(v for k, v in rates.items() if "fp32" in k and "conv" in k)
    effective = {name: {b: round(gops * int(b) / (ms / 1e3), 1) for b, ms in medians[name].items()}
                 for name in medians}
    return {"median_ms": medians, "ratios": ratios, "matrix_gops": rates, "sknet50_gop_per_picture": round(gops, 3),
            "effective_gops": effective, "best_conv_int8_gops": best_int8, "best_conv_fp32_gops": best_fp32,
            "int8_vs_int8_rate": {b: round(effective["openvino-int8"][b] / best_int8, 3) for b in medians[ORT_RAW]}}


def markdown(result: dict[str, Any]) -> str:
    """The report for people."""
    s, cpu, batches = result["summary"], result["cpu"], result["batches"]
    lines = ["# The default path against OpenVINO's zero-config default and ONNX Runtime (SKNet-50 at 224)", "",
             f"Reproduce: `{result['command']}`", "",
             f"{result['date']}; {result['machine']['cpu']}, {result['machine']['cores']} cores; CPU flags that decide "
             f"precisions: {', '.join(cpu['flags']) or 'none of AVX-512/VNNI/AMX'}; native bf16: "
             f"**{'yes' if cpu['native_bf16'] else 'no'}**. Libraries: "
             + ", ".join(f"{k} {v}" for k, v in result["versions"].items()) + ".", "",
             f"Each runner alone in a process of its own, {len(result['rounds'])} rounds alternating (rotating order), "
             f"about {result['seconds']} s of runs per batch size; medians over the rounds. The machine is shared: "
             f"load average (1/5/15 min) before each round: "
             + "; ".join(str(r["load_before"]) for r in result["rounds"])
             + f", after the last: {result['load_after']}. Interleaved rounds make the ratios fair even so; the "
               "absolute milliseconds are those of a loaded machine.", ""]
    if not cpu["native_bf16"]:
        lines += [f"**This CPU has no native bfloat16**, so the bf16 marks cannot be shown here: {cpu['refusal']}. "
                  "The plain export measured no bf16 gate (it said: "
                  f"\"{result['prepared'].get('bf16_line') or 'nothing'}\"), the default serves fp32, and OpenVINO's "
                  f"zero-config default compiled {result['runners_info'][ZERO_CONFIG].get('compiled_precision')}.", ""]
    head = ("| runner | what it served | " + " | ".join(f"batch {b} ms" for b in batches) + " | "
            + " | ".join(f"b{b} vs OpenVINO zero-config" for b in batches) + " | "
            + " | ".join(f"b{b} vs ORT fp32 raw" for b in batches) + " |")
    lines += [head, "| --- | --- |" + " ---: |" * (3 * len(batches))]
    for name, label in RUNNERS.items():
        info = result["runners_info"][name]
        served = info.get("description", "")
        if info.get("compiled_precision"):
            served += f" ({info['compiled_precision']} compiled)"
        cells = [f"{s['median_ms'][name][str(b)]:.1f}" for b in batches]
        cells += [f"{s['ratios'][name][str(b)]['vs_openvino_zero_config']:.2f}x" for b in batches]
        cells += [f"{s['ratios'][name][str(b)]['vs_ort_fp32_raw']:.2f}x" for b in batches]
        lines.append(f"| {label} | {served} | " + " | ".join(cells) + " |")
    lines += ["", "What the default said (precision line):", ""]
    for name in ("default", "default-with-int8"):
        lines.append(f"- `{name}`: {result['runners_info'][name].get('precision_reason')}")
    lines += ["", "## This CPU's matrix rates (GOP/s, 2 per multiply-add; medians over the rounds)", "",
              "| runtime, operation, form | GOP/s |", "| --- | ---: |"]
    lines += [f"| {key} | {value} |" for key, value in s["matrix_gops"].items()]
    lines += ["", f"SKNet-50 is {s['sknet50_gop_per_picture']:.2f} GOP per picture. Effective rate of each runner "
              "(GOP/s; pictures per second times that):", "",
              "| runner | " + " | ".join(f"batch {b}" for b in batches) + " |", "| --- |" + " ---: |" * len(batches)]
    for name in RUNNERS:
        lines.append(f"| {name} | " + " | ".join(f"{s['effective_gops'][name][str(b)]}" for b in batches) + " |")
    lines += ["", f"openvino int8 against this CPU's best measured int8 convolution rate ({s['best_conv_int8_gops']} "
              f"GOP/s; best fp32 convolution {s['best_conv_fp32_gops']} GOP/s): "
              + ", ".join(f"batch {b} {v:.0%}" for b, v in s["int8_vs_int8_rate"].items()) + ".", ""]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calib", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "imagenet-val-1300")
    parser.add_argument("--calib-size", type=int, default=256)
    parser.add_argument("--work", type=Path, default=Path("/tmp/sk-deploy-default-path"))
    parser.add_argument("--reuse", action="store_true", help="Reuse the bundles already in --work.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--seconds", type=float, default=4.0, help="Runs per batch size per runner and round.")
    parser.add_argument("--min-runs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "cpu-2core")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if args.child:
        print(json.dumps(child(args.child, args.work, batches, args.seconds, args.min_runs)))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    prepared = prepare(args.work, args.calib, args.calib_size, args.reuse)
    prepared["bf16_line"] = next((line for line in prepared.get("export", []) if "bf16 gate" in line), None)
    cpu = detect_cpu()
    names = list(RUNNERS)
    rounds, infos = [], {}
    for index in range(args.rounds):
        order = names[index % len(names):] + names[:index % len(names)]
        record: dict[str, Any] = {"load_before": load_average(), "order": order, "runners": {}}
        print(f"round {index + 1}/{args.rounds}: {', '.join(order)} (load {record['load_before']})", flush=True)
        for name in order:
            got = in_process([str(Path(__file__).resolve()), "--child", name, "--work", str(args.work), "--batches",
                              args.batches, "--seconds", str(args.seconds), "--min-runs", str(args.min_runs)])
            record["runners"][name] = got
            infos[name] = {k: v for k, v in got.items() if k != "batches"}
        record["matrix"] = in_process([str(HERE / "matrix_rate.py")])
        rounds.append(record)
    command = (f"python benchmarks/default_path/run.py --calib {os.path.relpath(args.calib, REPO_ROOT)} --calib-size "
               f"{args.calib_size} --out {os.path.relpath(args.out, REPO_ROOT)} --rounds {args.rounds} --batches "
               f"{args.batches} --seconds {args.seconds:g} --min-runs {args.min_runs}")
    machine = describe_machine()
    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "command": command, "machine": machine,
              "cpu": {"name": cpu.name, "flags": cpu.reported(), "native_bf16": cpu.native_bf16,
                      "int8_dot": cpu.int8_dot, "refusal": Precision.BF16.cpu_refusal(cpu),
                      "all_flags": sorted(cpu.flags)},
              "versions": {k: machine["libraries"][k] for k in ("python", "torch", "onnxruntime", "openvino", "onnx")
                           if k in machine["libraries"]},
              "batches": batches, "seconds": args.seconds, "prepared": prepared, "runners_info": infos,
              "rounds": rounds, "load_after": load_average(),
              "summary": summarise(rounds, batches, sknet50_gops_per_picture())}
    print(write_result(args.out, "default_path", result, markdown(result)))


if __name__ == "__main__":
    main()
