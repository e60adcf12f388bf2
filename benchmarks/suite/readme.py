"""benchmarks/README.md, generated from every machine's ``results/<machine>/suite.json``: the headline ratios,
the plots, which machine each figure came from and the command that reproduces it; the other benchmark scripts
and their results. ``python benchmarks/suite/readme.py`` regenerates it without measuring anything."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from sk_deploy.bench.machine import describe_short  # noqa: E402
from sk_deploy.bundle import atomic_write_bytes  # noqa: E402

OTHER = {
    "onnx_cleanup": ("benchmarks/onnx_cleanup/run.py", "ONNX Runtime CPU latency of SKNet-50: the cleaned graph vs "
                     "the raw export, onnxslim and onnxsim, interleaved, with the kernel-time share per op type"),
    "precision": ("benchmarks/precision/run.py", "FP16/INT8 accuracy against float32 on held-out photos; INT8 vs "
                  "float32 latency on ONNX Runtime CPU"),
    "gpu_baselines": ("benchmarks/gpu_baselines/run.py", "PyTorch eager, torch.compile (also with CUDA graphs) and "
                      "ONNX Runtime CUDA on one GPU"),
    "service": ("benchmarks/service/run.py", "HTTP throughput of sk-deploy serve against the Predictor's own, same "
                "bundle and batch"),
    "soak": ("benchmarks/service_soak/run.py", "a 2-minute soak of sk-deploy serve: 32 loopback clients, half good "
             "and half malformed requests; sent vs answered, server errors, RSS after warm-up vs at the end, "
             "good-request p99"),
    "openvino": ("benchmarks/openvino/run.py", "the CPU path: SKNet-50 on PyTorch, ONNX Runtime and OpenVINO (f32, "
                 "its default on the raw export, bf16 raw and cleaned, both int8 graphs) side by side, interleaved"),
}


def _p50(rows: list[dict[str, Any]], backend: str, precision: str, batch: int) -> float | None:
    for r in rows:
        if (r["backend"], r["precision"], r["batch"], r["status"]) == (backend, precision, batch, "ok"):
            return float(r["latency_ms"]["p50"])
    return None


def headline(suite: dict[str, Any]) -> list[str]:
    """One line per model and batch: every measured row's speed-up over PyTorch eager fp32 (median latency),
    the cleaned graph over the raw export, INT8 over float32 on ONNX Runtime CPU."""
    lines = []
    for model, entry in suite["models"].items():
        rows = entry["report"]["rows"]
        for batch in sorted({r["batch"] for r in rows if r["status"] == "ok"}):
            eager = _p50(rows, "torch", "fp32", batch)
            parts = [f"{r['backend']} {r['precision']} {r['vs_baseline']['speedup_p50']:.2f}x" for r in rows
                     if r["status"] == "ok" and r["batch"] == batch and not r["baseline"] and r["vs_baseline"]]
            text = f"{model}, batch {batch}: against PyTorch eager fp32 ({eager:.1f} ms): " + ", ".join(parts)
            cleaned, raw = _p50(rows, "ort-cpu", "fp32", batch), _p50(rows, "ort-cpu-raw", "fp32", batch)
            if cleaned and raw:
                text += f"; cleaned graph vs raw export on ONNX Runtime CPU {raw / cleaned:.2f}x"
            int8 = _p50(rows, "ort-cpu", "int8", batch)
            if cleaned and int8:
                text += f"; INT8 (CPU form) vs float32 on ONNX Runtime CPU {cleaned / int8:.2f}x"
            for precision in ("fp32", "bf16"):
                ov_cleaned, ov_raw = _p50(rows, "openvino", precision, batch), _p50(rows, "openvino-raw", precision,
                                                                                    batch)
                if ov_cleaned and ov_raw:
                    text += f"; cleaned graph vs raw export on OpenVINO {precision} {ov_raw / ov_cleaned:.2f}x"
            lines.append(text)
    service = suite.get("service", {})
    for step in service.get("steps", []):
        server = step.get("server") or {}
        lat = step.get("latency_ms") or {}
        lines.append(f"service ({service['served']['model']}), {step['concurrency']} clients: "
                     f"{step['ok_per_s']:.1f} pictures/s, p50 {lat.get('p50', 0):.0f} ms, p99 {lat.get('p99', 0):.0f} "
                     f"ms, mean server batch {server.get('mean_batch_size') or '-'}, errors {step['errors']}")
    return lines


def service_headline(path: Path) -> str:
    """The service-overhead ratio of ``results/<machine>/service.json`` (benchmarks/service/run.py), in one line."""
    run = json.loads(path.read_text())
    p99 = statistics.median(r["http"]["latency_ms"]["p99"] for r in run["repeats"])
    return (f"service overhead ({run['model']}, {run['backend']} {run['precision']}, {run['date'][:10]}): "
            f"HTTP reaches {run['ratio_median']:.0%} of the Predictor's own throughput at batch {run['max_batch']} "
            f"(median of {len(run['repeats'])} alternating repeats at concurrency {run['best_concurrency']}, HTTP p99 "
            f"{p99 / 1e3:.1f} s); `{run['command']}`, [service.md](results/{path.parent.name}/service.md)")


def render(results: Path) -> str:
    """The README's text for the results under ``results``."""
    suites = sorted(results.glob("*/suite.json"))
    lines = [
        "# Benchmarks", "",
        "<!-- generated by benchmarks/suite/readme.py from results/*/suite.json; edits here are overwritten -->", "",
        "One command runs the standard suite on the machine it is on and writes `results/<machine>/`:", "",
        "```bash", "python benchmarks/suite/run.py           # sknet50, skresnet18, seresnet50; 25-minute budget on "
        "2 cores", "python benchmarks/suite/run.py --quick   # skresnet18, short durations: checks the suite runs",
        "```", "",
        "Per model at 224x224 (random weights with realistic activations: latency does not depend on the values): "
        "PyTorch eager float32 (the baseline, measured first), torch.compile (sknet50; it compiles for minutes "
        "per batch size on a CPU), ONNX Runtime CPU on the cleaned graph "
        "and on the raw export, float32 and INT8 (CPU form), and on a GPU machine ONNX Runtime CUDA and TensorRT "
        "FP16/INT8 engines; then `sk-deploy serve` under the `bench-http` concurrency sweep. Latency is the wall "
        "time of one batch from host input to host logits; every ratio is a median latency over PyTorch eager "
        "fp32's at the same batch, measured in the same run. `sk-deploy bench BUNDLE` measures one bundle the "
        "same way.", "",
    ]
    gpu_suites = [s for s in suites if s.parent.name.startswith("nvidia")]
    if not gpu_suites:
        lines += ["No GPU machine has run the suite yet: nothing here is claimed for a GPU (the GPU figures below "
                  "come from `gpu_baselines`, on the machine named there).", ""]
    for path in suites:
        suite = json.loads(path.read_text())
        folder = path.parent.name
        lines += [f"## {folder}: {suite['mode']} mode, {suite['date'][:10]}", "",
                  f"{describe_short(suite['machine'])}. Command: `{suite['command']}` ({suite['elapsed_s']:.0f} s). "
                  f"Every table: [results/{folder}/suite.md](results/{folder}/suite.md).", ""]
        if suite["mode"] == "quick":
            lines += ["**Quick mode** (one model, short durations, possibly on a busy machine): these figures check "
                      "the suite, they are not the ones to quote. `python benchmarks/suite/run.py` on an idle "
                      "machine replaces them.", ""]
        service = path.parent / "service.json"
        extra = [service_headline(service)] if service.is_file() else []
        lines += [f"- {h}" for h in [*headline(suite), *extra]] + [""]
        for entry in suite["models"].values():
            lines += [f"![{Path(p).stem}](results/{folder}/{p})" for p in entry["plots"]]
        skipped = suite.get("service", {}).get("skipped")
        if skipped:
            lines += ["", f"Service under load: skipped ({skipped})."]
        lines += ["", *[f"- {n}" for n in suite["notes"]], ""]
    lines += ["## The other benchmarks", "", "| script | what | results |", "| --- | --- | --- |"]
    for stem, (script, what) in OTHER.items():
        found = sorted(results.glob(f"*/{stem}.md")) + sorted(results.glob(f"*/{stem}-*.md"))
        links = ", ".join(f"[{p.parent.name}/{p.name}](results/{p.parent.name}/{p.name})" for p in found) or "-"
        lines.append(f"| `{script}` | {what} | {links} |")
    lines += ["", "Each result file names its machine and the command that reproduces it. Benchmarks assert "
              "nothing: the tests in `tests/` check behaviour, never timings.", ""]
    return "\n".join(lines)


def write_readme(results: Path, path: Path) -> Path:
    """Write ``path`` (benchmarks/README.md) from ``results``; the path."""
    atomic_write_bytes(path, render(results).encode())
    return path


if __name__ == "__main__":
    print(write_readme(REPO_ROOT / "benchmarks" / "results", REPO_ROOT / "benchmarks" / "README.md"))
