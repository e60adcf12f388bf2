"""``sk-deploy tune``: the batching settings (max batch x max queue delay x instances) with the highest sustained
rate under a p99 target, each candidate served on loopback and driven open-loop."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sk_deploy.cli import render
from sk_deploy.cli.common import UserError, app, console, err_console, fail, note, split


@app.command("tune")
def tune_command(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory (from `sk-deploy export`).")],
    p99_ms: Annotated[float, typer.Option(min=0.001, help="The p99 latency target: a rate meets it when its p99 is "
                                          "within it and drops + errors are under 1% of the requests scheduled.")],
    backend: Annotated[str, typer.Option(help="The backend to serve on, as serve's --backend (auto: the one serve "
                                         "would take).")] = "auto",
    precision: Annotated[str, typer.Option(help="fp32, fp16, int8, bf16 or tf32, as serve's --precision.")]
    = "fp32",
    max_batch: Annotated[str, typer.Option(help="Candidate max batch sizes, comma-separated.")] = "1,4,8,16",
    max_delay_ms: Annotated[str, typer.Option(help="Candidate max queue delays (ms), comma-separated.")]
    = "0,2,5,10",
    instances: Annotated[str, typer.Option(help="Candidate instance counts, comma-separated (1 only where the "
                                           "backend runs one instance; the report says why).")] = "1,2",
    duration_ms: Annotated[float, typer.Option(min=100, help="Milliseconds of each open-loop step (4 per "
                                               "candidate, after a closed-loop probe of half as long).")] = 2000.0,
    budget_ms: Annotated[float, typer.Option(min=1000, help="Milliseconds the whole tune may take; candidates that "
                                             "would start past it are listed as not run (540000: 9 minutes).")]
    = 540_000.0,
    finalists: Annotated[int, typer.Option(min=0, help="Candidates with the highest sustained rates served again "
                                           "and held at that rate (then lower) for 5 x --duration-ms (short steps "
                                           "flatter a rate just above capacity); the choice is among them (0: "
                                           "none).")] = 3,
    max_queue: Annotated[int, typer.Option(min=1, help="Each server's --max-queue.")] = 256,
    max_in_flight: Annotated[int, typer.Option(min=1, help="Open-loop requests in flight at most.")] = 256,
    arrivals: Annotated[str, typer.Option(help="Open-loop arrivals: constant or poisson (seeded by --seed).")]
    = "constant",
    seed: Annotated[int, typer.Option(help="Seed of the Poisson arrivals.")] = 0,
    images: Annotated[Path | None, typer.Option(help="Folder of JPEG/PNG/WebP pictures to post (the first 64; "
                                                "default: 8 generated PNG pictures).")] = None,
    out: Annotated[Path | None, typer.Option(help="Directory for tune.json, tune.md and tune.png (default: "
                                             "tune-results/<bundle name>).")] = None,
    config_file: Annotated[Path | None, typer.Option("--config", help="Write the chosen settings to this TOML file "
                                                     "(serve --config and triton-repo --config take it).")] = None,
    plots: Annotated[bool, typer.Option(help="Draw tune.png (needs matplotlib).")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Find the serving settings with the highest sustained request rate under --p99-ms: for each candidate of
    --max-batch x --max-delay-ms (x --instances where the backend runs several), start `sk-deploy serve` on
    127.0.0.1, probe its capacity closed-loop, bisect the open-loop rate it sustains, stop it. Prints a line per
    candidate, the grid and the choice; writes the report to --out and the choice to --config. Bounded by
    --budget-ms. Ctrl-C keeps the candidates measured (exit 130)."""
    import signal

    from sk_deploy.bench.http_load import load_payloads
    from sk_deploy.bench.machine import load_average
    from sk_deploy.bench.open_loop import ARRIVALS
    from sk_deploy.bench.tune import Candidate, TuneConfig, TuneResult, tune
    from sk_deploy.bench.tune_report import build_tune_report, choice_line, tune_table, write_choice, write_tune_report
    from sk_deploy.bundle import Bundle
    from sk_deploy.runtime.availability import probe_machine
    from sk_deploy.runtime.instances import instances_refusal
    from sk_deploy.runtime.predictor import plan

    if arrivals not in ARRIVALS:
        raise fail(f"--arrivals: choose one of {', '.join(ARRIVALS)}, not {arrivals!r}")
    config = TuneConfig(bundle=bundle, p99_ms=p99_ms, backend=backend, precision=precision,
                        max_batch=split(max_batch, "--max-batch", int),
                        max_delay_ms=split(max_delay_ms, "--max-delay-ms", float),
                        instances=split(instances, "--instances", int), duration_s=duration_ms / 1000,
                        probe_s=duration_ms / 2000, budget_s=budget_ms / 1000, max_queue=max_queue,
                        max_in_flight=max_in_flight, arrivals=arrivals, seed=seed, finalists=finalists)
    try:
        opened = Bundle.open(bundle)
        chosen = plan(opened, backend, precision, probe_machine()).backend
        payloads = load_payloads(images)
    except UserError as exc:
        raise fail(str(exc)) from None
    command = (f"sk-deploy tune {bundle} --p99-ms {p99_ms:g} --backend {backend} --precision {precision} "
               f"--max-batch {max_batch} --max-delay-ms {max_delay_ms} --instances {instances} --duration-ms "
               f"{duration_ms:g} --budget-ms {budget_ms:g} --finalists {finalists}"
               + (f" --images {images}" if images else "")
               + (f" --arrivals poisson --seed {seed}" if arrivals == "poisson" else ""))
    load_before = load_average()
    err_console.print(f"tuning {opened.model_name} on {chosen} {precision} for p99 <= {p99_ms:g} ms",
                      highlight=False)

    def on_start(candidate: Candidate, index: int, count: int) -> None:
        err_console.print(f"[dim][{index}/{count}][/] {candidate.label}...", highlight=False)

    def on_verify(candidate: Candidate) -> None:
        err_console.print(f"[dim]finalist:[/] {candidate.label}, held at {candidate.sustained_per_s:.1f}/s for "
                          f"{config.duration_s * config.verify_factor:g} s...", highlight=False)

    def on_done(candidate: Candidate) -> None:
        if candidate.verify_tried:
            held = candidate.verified
            err_console.print("  " + (f"holds {held.rate:.1f}/s, p99 {held.latency.p99:.1f} ms" if held and held.latency
                                      else candidate.reason or "no rate held"), highlight=False)
            return
        if candidate.status != "ok":
            err_console.print(f"  [red]{candidate.status}[/]: {candidate.reason}", highlight=False, soft_wrap=True)
            return
        best = candidate.sustained
        figures = (f"sustains {best.rate:.1f}/s, p99 {best.latency.p99:.1f} ms" if best and best.latency
                   else candidate.reason)
        err_console.print(f"  capacity {candidate.capacity_per_s:.1f}/s closed loop; {figures} "
                          f"({candidate.seconds:.0f} s)", highlight=False)

    result = TuneResult(chosen, [])
    interrupted = False
    try:
        tune(config, chosen, instances_refusal(chosen), payloads, on_start=on_start, on_done=on_done, result=result,
             on_verify=on_verify)
    except UserError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        interrupted = True
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    report = build_tune_report(config, result, command, load_before, interrupted)
    if as_json:
        render.as_json(report)
    else:
        render.show(tune_table(report))
        console.print(choice_line(report), highlight=False, soft_wrap=True)
    out = out or Path("tune-results") / bundle.resolve().name
    written, no_plot = write_tune_report(report, out, with_plots=plots)
    if no_plot:
        note(no_plot)
    if config_file is not None:
        path = write_choice(report, config_file)
        if path is None:
            note(f"nothing met the target: {config_file} not written")
        else:
            written.append(path)
    err_console.print(f"[green]wrote[/] {', '.join(str(p) for p in written)}", highlight=False, soft_wrap=True)
    if interrupted:
        raise fail(f"interrupted: partial tune written to {out}", code=130)
