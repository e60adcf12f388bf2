"""Our INT8 TensorRT form against NVIDIA Model Optimizer's, on the same network and the same photos.

Exports the network (default SKNet-50 at 224, random weights made realistic with BatchNorm statistics from
``--bn-images``), quantizes it with ``sk-deploy quantize``'s code (INT8 TensorRT form, FP16 and FP32 for the
rest) and with ``modelopt.onnx.quantization`` (run in its own virtual environment, ``--modelopt-python``) on the
same calibration photos, then compares the graphs: Q/DQ count and placement, float16 share, float32 nodes left on
full-size maps, and accuracy against float32 in ONNX Runtime CPU on the same held-out photos.

    python benchmarks/modelopt/run.py --bn-images ../shared/data/imagenet-samples \\
        --calib ../shared/data/imagenet-val-1300 --out benchmarks/results/cpu-2core

A benchmark, not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from sk_deploy.bench.machine import cpu_name, load_average  # noqa: E402
from sk_deploy.bench.report import write_result  # noqa: E402
from sk_deploy.bundle import tool_versions  # noqa: E402
from sk_deploy.graph.pipeline import export_bundle  # noqa: E402
from sk_deploy.metrics import agreement  # noqa: E402
from sk_deploy.precision.calibration import ImageBatches, list_images, split_images  # noqa: E402
from sk_deploy.precision.mixed import FLOATS, elem_types, float32_islands  # noqa: E402
from sk_deploy.precision.pipeline import quantize_bundle  # noqa: E402
from sk_deploy.runners import ort_logits  # noqa: E402
from sk_deploy.settings.graph import ExportSettings  # noqa: E402
from sk_deploy.settings.precision import QuantizeSettings  # noqa: E402

HERE = Path(__file__).resolve().parent


def structure(path: Path) -> dict:
    """Q/DQ count and placement, float16 share and float32 nodes on full-size maps of a Q/DQ graph."""
    model = onnx.load(path)
    graph = model.graph
    types = elem_types(model)
    producers = {o: n for n in graph.node for o in n.output}
    quantized = collections.Counter(
        n.op_type for n in graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear")
        and any(producers.get(i) is not None and producers[i].op_type == "DequantizeLinear" for i in n.input)
    )
    compute = [n for n in graph.node if n.op_type not in ("QuantizeLinear", "DequantizeLinear", "Cast")
               and any(types.get(o) in FLOATS for o in n.output)]
    half = [n for n in compute if types.get(n.output[0]) == onnx.TensorProto.FLOAT16]
    inits = {t.name: t for t in graph.initializer}
    zp_types = collections.Counter(
        onnx.TensorProto.DataType.Name(inits[n.input[2]].data_type) for n in graph.node
        if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in inits
    )
    return {
        "opset": next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
        "nodes": len(graph.node),
        "quantize_linear": sum(n.op_type == "QuantizeLinear" for n in graph.node),
        "dequantize_linear": sum(n.op_type == "DequantizeLinear" for n in graph.node),
        "quantized_inputs_of": dict(quantized.most_common()),
        "convs": sum(n.op_type == "Conv" for n in graph.node),
        "casts": sum(n.op_type == "Cast" for n in graph.node),
        "float16_share": round(len(half) / len(compute), 4) if compute else 0.0,
        "float32_compute_ops": dict(collections.Counter(n.op_type for n in compute if n not in half).most_common()),
        "float32_full_maps": len(float32_islands(model)),
        "zero_point_types": dict(zp_types),
        "input_types": [onnx.TensorProto.DataType.Name(i.type.tensor_type.elem_type) for i in graph.input],
        "output_types": [onnx.TensorProto.DataType.Name(o.type.tensor_type.elem_type) for o in graph.output],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="sknet50")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--bn-images", type=Path, required=True)
    parser.add_argument("--calib", type=Path, required=True)
    parser.add_argument("--calib-size", type=int, default=128)
    parser.add_argument("--holdout-size", type=int, default=128)
    parser.add_argument("--modelopt-python", default="/tmp/modelopt-venv/bin/python")
    parser.add_argument("--modelopt-methods", default="max", help="comma-separated: max, entropy")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "cpu-2core")
    args = parser.parse_args()
    load_before = load_average()
    graphs: dict[str, dict] = {}

    with tempfile.TemporaryDirectory(prefix="sk-deploy-modelopt-") as tmp:
        work = Path(tmp)
        bundle_dir = work / "bundle"
        print(f"exporting {args.model} at {args.size}", flush=True)
        bundle, _ = export_bundle(ExportSettings(model=args.model, out=bundle_dir, input_size=(args.size, args.size),
                                                images=args.bn_images,
                                                 recompute_bn=args.bn_images is not None, verify=False))
        spec = bundle.preprocess
        split = split_images(list_images(args.calib), args.calib_size, args.holdout_size)
        calib = np.concatenate(list(ImageBatches(split.calibration, "x", spec).arrays()))
        holdout = np.concatenate(list(ImageBatches(split.holdout, "x", spec).arrays()))
        np.save(work / "calib.npy", calib)
        reference = ort_logits(bundle_dir / "model.onnx", lambda dtype: holdout)

        files: dict[str, Path] = {}
        for high in ("fp32", "fp16"):
            print(f"sk-deploy quantize: int8 tensorrt, --high-precision {high}", flush=True)
            start = time.perf_counter()
            result = quantize_bundle(QuantizeSettings(bundle=bundle_dir, precision="int8", target="tensorrt",
                                                     images=args.calib, calib_size=args.calib_size,
                                                     holdout_size=args.holdout_size, high_precision=high,
                                                     gate=False))
            name = f"sk-deploy (minmax, {high} elsewhere)"
            files[name] = shutil.copy(bundle_dir / result.file, work / f"ours-{high}.onnx")
            graphs[name] = {"seconds": round(time.perf_counter() - start, 1)}
        for method in args.modelopt_methods.split(","):
            name = f"Model Optimizer ({method}, fp16 elsewhere)"
            out = work / f"modelopt-{method}.onnx"
            print(f"modelopt.onnx.quantization: int8, {method}", flush=True)
            run = subprocess.run([args.modelopt_python, str(HERE / "quantize_modelopt.py"),
                                  str(bundle_dir / "model.onnx"), str(work / "calib.npy"), str(out),
                                  "--method", method], capture_output=True, text=True, check=False)
            if run.returncode != 0 or not out.is_file():
                graphs[name] = {"error": (run.stderr.strip().splitlines() or ["no output"])[-1][:300]}
                continue
            graphs[name] = json.loads(run.stdout.strip().splitlines()[-1])
            files[name] = out
        for name, path in files.items():
            print(f"measuring {name}", flush=True)
            graphs[name]["structure"] = structure(Path(path))
            start = time.perf_counter()
            figures = agreement(reference, ort_logits(path, lambda dtype: holdout))
            graphs[name]["accuracy"] = figures.to_dict()
            graphs[name]["ort_cpu_seconds"] = round(time.perf_counter() - start, 1)

    report = {
        "command": "python benchmarks/modelopt/run.py " + " ".join(sys.argv[1:]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "model": args.model, "size": args.size,
        "calibration_images": len(calib), "holdout_images": len(holdout),
        "machine": {"cpu": cpu_name(), "cores": os.cpu_count(), "platform": platform.platform(),
                    "load_average_before": load_before, "load_average_after": load_average()},
        "tools": tool_versions(), "graphs": graphs,
    }
    print(write_result(args.out, "modelopt", report, markdown(report)))


def markdown(report: dict) -> str:
    """The comparison for people."""
    m = report["machine"]
    lines = [
        f"# INT8 TensorRT form: sk-deploy against NVIDIA Model Optimizer ({report['model']} at {report['size']})", "",
        f"Reproduce: `{report['command']}`", "",
        f"{m['cpu']}, {m['cores']} cores, {report['date']}; ONNX Runtime {report['tools'].get('onnxruntime')} CPU "
        f"for every accuracy figure. Calibration: the same {report['calibration_images']} photos for both; "
        f"accuracy on {report['holdout_images']} other photos against the float32 graph. Random weights made "
        "realistic (BatchNorm statistics on real photos): top-1 agreement says little, cosine and SQNR carry it.", "",
        "| graph | Q / DQ | inputs quantized of | convs | float16 share | float32 on full maps | casts | opset | "
        "cosine mean | cosine min | SQNR dB | top-1 agree |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, g in report["graphs"].items():
        if "error" in g:
            lines.append(f"| {name} | failed: {g['error']} |" + " |" * 11)
            continue
        s, a = g["structure"], g["accuracy"]
        placed = ", ".join(f"{op} {n}" for op, n in s["quantized_inputs_of"].items())
        lines.append(
            f"| {name} | {s['quantize_linear']} / {s['dequantize_linear']} | {placed} | {s['convs']} | "
            f"{s['float16_share']:.0%} | {s['float32_full_maps']} | {s['casts']} | {s['opset']} | "
            f"{a['cosine_mean']:.5f} | {a['cosine_min']:.5f} | {a['sqnr_db']:.1f} | {a['top1_agreement']:.1%} |"
        )
    lines += ["", "Float32 compute ops left (op: count) and zero-point types:", ""]
    for name, g in report["graphs"].items():
        if "structure" in g:
            s = g["structure"]
            lines.append(f"- {name}: {s['float32_compute_ops'] or 'none'}; zero points {s['zero_point_types']}; "
                         f"inputs {s['input_types']}, outputs {s['output_types']}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
