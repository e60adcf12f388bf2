"""Quantize an ONNX graph with NVIDIA Model Optimizer (``modelopt.onnx.quantization``), on calibration arrays.

Runs in Model Optimizer's own virtual environment (its ONNX extra pins onnxruntime-gpu and an older onnx), not in
this project's: ``run.py`` calls it with that environment's python. Calibration runs on ONNX Runtime's CPU
provider only (``calibration_eps=["cpu"]``).

    /tmp/modelopt-venv/bin/python quantize_modelopt.py MODEL.onnx CALIB.npy OUT.onnx --method max
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import onnx


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model")
    parser.add_argument("calibration", help=".npy of preprocessed calibration pictures (N, 3, H, W) float32")
    parser.add_argument("out")
    parser.add_argument("--method", default="max", help="int8 calibration: max or entropy")
    parser.add_argument("--high-precision", default="fp16")
    args = parser.parse_args()
    import modelopt
    from modelopt.onnx.quantization import quantize

    data = np.load(args.calibration)
    input_name = onnx.load(args.model, load_external_data=False).graph.input[0].name
    start = time.perf_counter()
    quantize(
        onnx_path=args.model, quantize_mode="int8", calibration_data={input_name: data},
        calibration_method=args.method, calibration_eps=["cpu"], high_precision_dtype=args.high_precision,
        output_path=args.out, log_level="WARNING",
    )
    print(json.dumps({"modelopt": modelopt.__version__, "onnx": onnx.__version__, "method": args.method,
                      "high_precision": args.high_precision, "calibration_images": len(data),
                      "seconds": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
    main()
