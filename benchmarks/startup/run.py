"""How fast the command line answers when it has nothing heavy to do: ``sk-deploy --help``, ``--version`` and an
argument error, each run as a fresh process, against ``python -c pass`` (the interpreter's own start) measured
in the same rounds. Interleaved rounds, medians; writes startup.json and startup.md with the command, the
machine and the library versions.

    python benchmarks/startup/run.py --rounds 15 --out benchmarks/results/cpu-2core
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import subprocess
import sys
import time
from importlib.metadata import version
from pathlib import Path

CASES = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "sk-deploy --help": ["--help"],
    "sk-deploy --version": ["--version"],
    "sk-deploy predict x.jpg --top-k many (argument error)": ["predict", "x.jpg", "--top-k", "many"],
    "sk-deploy bench (missing argument)": ["bench"],
}


def command(args: list[str]) -> list[str]:
    """The installed console script (what a user runs), else ``python -m sk_deploy``."""
    if args and args[0] == sys.executable:
        return args
    exe = shutil.which("sk-deploy")
    return [exe, *args] if exe else [sys.executable, "-m", "sk_deploy", *args]


def cpu_model() -> str:
    """The CPU's model name and flags count, from /proc/cpuinfo where there is one."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    return f"{name}; flags: {' '.join(f for f in flags if f.startswith(('avx', 'sse4', 'amx', 'fma')))}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cpu-2core"))
    options = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in CASES}
    for _ in range(options.rounds):
        for name, args in CASES.items():  # interleaved: each round runs every case once
            start = time.perf_counter()
            subprocess.run(command(args), capture_output=True, check=False)
            times[name].append(time.perf_counter() - start)
    medians = {name: statistics.median(values) for name, values in times.items()}
    base = medians["python -c pass"]
    report = {
        "command": f"python benchmarks/startup/run.py --rounds {options.rounds} --out {options.out}",
        "machine": {"cpu": cpu_model(), "cores": len(__import__("os").sched_getaffinity(0)),
                    "python": platform.python_version(),
                    "libraries": {n: version(n) for n in ("typer", "rich", "torch", "onnxruntime")}},
        "rounds": options.rounds,
        "median_s": medians,
        "over_python_start_s": {name: m - base for name, m in medians.items()},
    }
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "startup.json").write_text(json.dumps(report, indent=2, allow_nan=False) + "\n")
    lines = [f"# Command-line start-up ({options.rounds} interleaved rounds, medians)", "",
             f"Command: `{report['command']}`  ", f"Machine: {report['machine']['cpu']}, "
             f"{report['machine']['cores']} cores; Python {report['machine']['python']}; "
             + ", ".join(f"{k} {v}" for k, v in report["machine"]["libraries"].items()), "",
             "| case | median s | over `python -c pass` s |", "| --- | ---: | ---: |"]
    lines += [f"| `{name}` | {m:.3f} | {m - base:.3f} |" for name, m in medians.items()]
    (options.out / "startup.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
