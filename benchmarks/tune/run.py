"""Tune and confirm: ``sk-deploy tune`` on a bundle for a p99 target, then a separate open-loop run of
``sk-deploy bench-http --request-rate`` against ``sk-deploy serve --config <the chosen file>``, at offered rates
around the tuned one, confirming its p99 and rate.

    python benchmarks/tune/run.py                       # skresnet18 (random weights), p99 <= 100 ms, the defaults
    python benchmarks/tune/run.py --p99-ms 200 --bundle bundles/sknet50

Writes ``tune-<model>.{json,md,png,toml}`` and ``tune-<model>-confirm.{json,md}`` with its two plots to ``--out``
(``benchmarks/results/<machine>``). Both commands are recorded in the reports with the machine, its CPU flags,
library versions and load average. The load generator runs on the same cores as the server. A benchmark, not a
test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from sk_deploy.bench.local_server import LocalServer  # noqa: E402
from sk_deploy.bench.machine import describe_machine, machine_slug  # noqa: E402
from sk_deploy.bench.rate_report import PLOTS, rate_markdown  # noqa: E402
from sk_deploy.bench.report import write_result  # noqa: E402
from sk_deploy.bench.tune_report import tune_markdown  # noqa: E402

PHOTOS = REPO_ROOT.parent / "shared/data/imagenet-val-1300"
#: the offered rates of the confirmation, as fractions of the tuned rate
AROUND = (0.5, 0.75, 1.0, 1.25, 1.5)


def sk_deploy(*args: str) -> None:
    """Run ``sk-deploy ARGS`` (this checkout's), its output shown; a failure stops the benchmark."""
    subprocess.run([sys.executable, "-m", "sk_deploy", *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, help="bundle to tune (default: export --model into a temp dir)")
    parser.add_argument("--model", default="skresnet18")
    parser.add_argument("--p99-ms", type=float, default=100.0)
    parser.add_argument("--images", type=Path, default=PHOTOS if PHOTOS.is_dir() else None)
    parser.add_argument("--confirm-ms", type=float, default=10_000.0, help="each confirmation step")
    parser.add_argument("--out", type=Path, default=None)
    args, tune_args = parser.parse_known_args()  # the rest goes to sk-deploy tune (--budget-ms, --instances, ...)
    out = args.out or REPO_ROOT / "benchmarks/results" / machine_slug(describe_machine())
    images = ["--images", str(args.images)] if args.images else []
    script = "python " + " ".join([str(Path(sys.argv[0]).resolve().relative_to(REPO_ROOT)), *sys.argv[1:]])
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        bundle = args.bundle
        if bundle is None:
            bundle = work / args.model
            sk_deploy("export", args.model, "--out", str(bundle), "--no-verify")
        stem = f"tune-{args.model}"
        settings = out / f"{stem}.toml"
        sk_deploy("tune", str(bundle), "--p99-ms", f"{args.p99_ms:g}", "--out", str(work / "tune"), "--config",
                  str(settings), *images, *tune_args)
        tuned = json.loads((work / "tune" / "tune.json").read_text())
        shutil.copy(work / "tune" / "tune.png", out / f"{stem}.png")
        tuned["settings_file"] = str(settings.relative_to(REPO_ROOT))
        tuned["script"] = script
        heading, rest = tune_markdown(tuned, f"{stem}.png").split("\n", 1)
        write_result(out, stem, tuned, f"{heading}\n\nFrom `{script}`; the chosen settings: "
                                       f"[{settings.name}]({settings.name}).\n{rest}")
        if tuned["choice"] is None:
            raise SystemExit("no setting met the target: nothing to confirm")

        choice = tuned["choice"]
        rate = choice["verified_per_s"] if choice["finalist"] else choice["sustained_per_s"]
        rates = ",".join(f"{rate * f:.1f}" for f in AROUND)
        serve_args = ("--backend", tuned["backend"], "--precision", tuned["precision"], "--config", str(settings),
                      "--no-access-log")
        with LocalServer(bundle, *serve_args) as server:
            server.wait_ready(300)
            sk_deploy("bench-http", server.url, "--request-rate", rates, "--p99-ms", f"{args.p99_ms:g}",
                      "--duration-ms", f"{args.confirm_ms:g}", "--out", str(work / "confirm"), *images)
        confirm = json.loads((work / "confirm" / "bench-http-rate.json").read_text())
        confirm["serve_command"] = (f"sk-deploy serve BUNDLE {' '.join(serve_args[:-3])} --config "
                                    f"{settings.relative_to(REPO_ROOT)} --no-access-log")
        confirm["tuned_per_s"] = rate
        plots = []
        for name in PLOTS.values():
            shutil.copy(work / "confirm" / name, out / f"{stem}-confirm-{name}")
            plots.append(f"{stem}-confirm-{name}")
        heading, rest = rate_markdown(confirm, plots).split("\n", 1)
        markdown = (f"{heading}\n\nServed with `{confirm['serve_command']}`: the settings chosen in "
                    f"[{stem}.md]({stem}.md), tuned rate {rate:g} requests/s, offered here at "
                    f"{', '.join(f'{f:g}x' for f in AROUND)} of it. Both from `{script}`.\n{rest}")
        write_result(out, f"{stem}-confirm", confirm, markdown)
    print(f"wrote {out}/{stem}.* and {out}/{stem}-confirm.*")


if __name__ == "__main__":
    main()
