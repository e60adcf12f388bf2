"""What FP16 and INT8 cost in accuracy, and what INT8 buys on ONNX Runtime CPU, for one network.

Exports the network with realistic activations (BatchNorm statistics recomputed on one folder of photos,
``--bn-images``), makes its FP16, INT8 (TensorRT form) and INT8 (CPU form) graphs calibrated on another folder
(``--calib``), gates each against float32 on held-out photos of that folder (never the calibration ones), then
times float32 against the INT8 graphs in ONNX Runtime CPU, interleaved, medians over rounds.

    python benchmarks/precision/run.py --bn-images ../shared/data/imagenet-samples \\
        --calib ../shared/data/imagenet-val-1300 --out benchmarks/results/cpu-2core

A benchmark, not a test: it asserts nothing; the figures and ratios are what it reports.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import onnxruntime as ort

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from sk_deploy.bench.machine import cpu_name, load_average  # noqa: E402
from sk_deploy.bench.report import write_result  # noqa: E402
from sk_deploy.bench.timing import interleaved  # noqa: E402
from sk_deploy.bundle import tool_versions  # noqa: E402
from sk_deploy.graph.pipeline import export_bundle  # noqa: E402
from sk_deploy.precision.calibration import ImageBatches, list_images, split_images  # noqa: E402
from sk_deploy.precision.pipeline import quantize_bundle  # noqa: E402
from sk_deploy.settings.graph import ExportSettings  # noqa: E402
from sk_deploy.settings.precision import QuantizeSettings  # noqa: E402

TIMED = ("model.onnx", "model.int8-cpu.onnx", "model.int8.onnx")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="sknet50")
    parser.add_argument("--bn-images", type=Path, required=True, help="photos for BatchNorm statistics")
    parser.add_argument("--calib", type=Path, required=True, help="photos to calibrate on and hold out")
    parser.add_argument("--calib-size", type=int, default=256)
    parser.add_argument("--holdout-size", type=int, default=256)
    parser.add_argument("--method", default="minmax")
    parser.add_argument("--rounds", type=int, default=24, help="timed rounds at batch 1 (a third of it at 8)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "cpu-2core")
    args = parser.parse_args()
    load_before = load_average()

    with tempfile.TemporaryDirectory(prefix="sk-deploy-precision-") as tmp:
        bundle_dir = Path(tmp) / "bundle"
        print(f"exporting {args.model} with BatchNorm statistics from {args.bn_images}", flush=True)
        bundle, _ = export_bundle(ExportSettings(model=args.model, out=bundle_dir, images=args.bn_images,
                                                 recompute_bn=args.bn_images is not None,
                                                verify=False))
        accuracy = {}
        for precision, target in (("fp16", "tensorrt"), ("int8", "tensorrt"), ("int8", "cpu")):
            print(f"quantizing: {precision} {target}", flush=True)
            result = quantize_bundle(QuantizeSettings(
                bundle=bundle_dir, precision=precision, target=target, images=args.calib,
                calib_size=args.calib_size, holdout_size=args.holdout_size, method=args.method, gate=False,
            ))
            accuracy[result.file] = {"passed": result.accuracy.passed, "failures": result.accuracy.failures,
                                     **result.accuracy.agreement.to_dict(), **result.details}

        spec = bundle.preprocess
        holdout = split_images(list_images(args.calib), args.calib_size, args.holdout_size).holdout
        photos = next(ImageBatches(holdout[:8], "x", spec, batch_size=8).arrays())
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        sessions = {name: ort.InferenceSession(str(bundle_dir / name), options, providers=["CPUExecutionProvider"])
                    for name in TIMED}
        input_name = sessions["model.onnx"].get_inputs()[0].name
        latency = {}
        for batch, rounds in ((1, args.rounds), (8, max(4, args.rounds // 3))):
            print(f"timing batch {batch}: {rounds} interleaved rounds", flush=True)
            feeds = {name: {input_name: photos[:batch]} for name in TIMED}
            times = interleaved(sessions, feeds, rounds, warmup=2)
            medians = {name: statistics.median(t) * 1000 for name, t in times.items()}
            latency[batch] = {name: {"median_ms": round(m, 2), "min_ms": round(min(times[name]) * 1000, 2),
                                     "speedup_vs_fp32": round(medians["model.onnx"] / m, 3)}
                              for name, m in medians.items()}

    report = {
        "command": "python benchmarks/precision/run.py " + " ".join(sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "model": args.model,
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "ort_threads": args.threads,
                    "platform": platform.platform(), "load_average_before": load_before,
                    "load_average_after": load_average()},
        "tools": tool_versions(), "accuracy": accuracy, "latency": latency,
    }
    print(write_result(args.out, "precision", report, markdown(report)))


def markdown(report: dict) -> str:
    """The report for people."""
    m = report["machine"]
    lines = [
        f"# FP16 / INT8: accuracy against float32 and ONNX Runtime CPU latency ({report['model']})", "",
        f"Reproduce: `{report['command']}`", "",
        f"{m['cpu']}, {m['cores']} cores, ORT {report['tools'].get('onnxruntime')} with {m['ort_threads']} "
        f"intra-op threads, {report['date']}. Load average before / after: {m['load_average_before']} / "
        f"{m['load_average_after']}.", "",
        "Random weights made realistic: BatchNorm statistics recomputed on real photos and residual branches "
        "scaled to 0.2 (`sk_deploy/models/bn_stats.py` says why). Top-1 agreement of an untrained network "
        "says little (near-tied logits); cosine and SQNR carry the comparison.", "",
        "## Accuracy on held-out photos (not used for calibration)", "",
        "| file | gate | cosine mean | cosine min | SQNR dB | top-1 agree | top-5 overlap | max abs | images |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, a in report["accuracy"].items():
        lines.append(
            f"| {name} | {'pass' if a['passed'] else 'FAIL'} | {a['cosine_mean']:.5f} | {a['cosine_min']:.5f} | "
            f"{a['sqnr_db']:.1f} | {a['top1_agreement']:.1%} | {a['top5_overlap']:.1%} | {a['max_abs']:.3f} | "
            f"{a['images']} |"
        )
    lines += ["", "## ONNX Runtime CPU latency (real photos as input)", "",
              "| file | batch | median ms | fastest ms | speed-up vs float32 (medians) |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for batch, rows in report["latency"].items():
        for name, row in rows.items():
            lines.append(f"| {name} | {batch} | {row['median_ms']:.1f} | {row['min_ms']:.1f} | "
                         f"{row['speedup_vs_fp32']:.2f}x |")
    lines += ["", "`model.int8.onnx` is the TensorRT form (symmetric int8 activations): it is built for TensorRT, "
              "and ONNX Runtime CPU runs it slowly by design; `model.int8-cpu.onnx` is the CPU form (U8S8).", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
