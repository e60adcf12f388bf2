"""``sk-deploy tune``: the batching settings (max batch x max queue delay x instances) with the highest sustained
rate under a p99 target, each candidate served on loopback and driven open-loop."""

from __future__ import annotations

from pathlib import Path

from sk_deploy.cli import render
from sk_deploy.cli.common import console, err_console, fail, note
from sk_deploy.cli.options import command
from sk_deploy.errors import SkDeployError
from sk_deploy.settings.base import command_line
from sk_deploy.settings.bench import TuneSettings


@command(TuneSettings)
def tune_command(settings: TuneSettings) -> None:
    """Find the serving settings with the highest sustained request rate under --p99-ms: for each candidate of
    --max-batch x --max-delay-ms (x --instances where the backend runs several), start `sk-deploy serve` on
    127.0.0.1, probe its capacity closed-loop, bisect the open-loop rate it sustains, stop it. Prints a line per
    candidate, the grid and the choice; writes the report to --out and the choice to --config. Bounded by
    --budget-ms. Ctrl-C keeps the candidates measured (exit 130)."""
    import signal

    from sk_deploy.bench.http_load import load_payloads
    from sk_deploy.bench.machine import load_average
    from sk_deploy.bench.tune import TuneConfig, TuneResult, tune
    from sk_deploy.bench.tune_report import build_tune_report, choice_line, tune_table, write_choice, write_tune_report
    from sk_deploy.bundle import Bundle
    from sk_deploy.machine import probe_machine
    from sk_deploy.runtime.instances import instances_refusal
    from sk_deploy.runtime.predictor import plan

    bundle, backend, precision = settings.bundle, settings.backend, settings.precision
    config = TuneConfig(bundle=bundle, p99_ms=settings.p99_ms, backend=backend, precision=precision,
                        max_batch=settings.max_batch, max_delay_ms=settings.max_delay_ms,
                        instances=settings.instances, duration_s=settings.duration_ms / 1000,
                        probe_s=settings.duration_ms / 2000, budget_s=settings.budget_ms / 1000,
                        max_queue=settings.max_queue, max_in_flight=settings.max_in_flight,
                        arrivals=settings.arrivals, seed=settings.seed, finalists=settings.finalists)
    try:
        opened = Bundle.open(bundle)
        chosen = plan(opened, backend, precision, probe_machine()).backend
        payloads = load_payloads(settings.images)
    except SkDeployError as exc:
        raise fail(str(exc)) from None
    command = command_line(settings, always=("backend", "precision", "max_batch", "max_delay_ms", "instances",
                                             "duration_ms", "budget_ms", "finalists"))
    load_before = load_average()
    err_console.print(f"tuning {opened.model_name} on {chosen} {precision} for p99 <= {settings.p99_ms:g} ms",
                      highlight=False)

    result = TuneResult(chosen, [])
    interrupted = False
    try:
        lines = render.TuneLines(config.duration_s * config.verify_factor)
        tune(config, chosen, instances_refusal(chosen), payloads, on_start=lines.start, on_done=lines.done,
             result=result, on_verify=lines.verify)
    except SkDeployError as exc:
        raise fail(str(exc)) from None
    except KeyboardInterrupt:
        interrupted = True
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    report = build_tune_report(config, result, command, load_before, interrupted)
    if settings.as_json:
        render.as_json(report)
    else:
        render.show(tune_table(report))
        console.print(choice_line(report), highlight=False, soft_wrap=True)
    out = settings.out or Path("tune-results") / bundle.resolve().name
    written, no_plot = write_tune_report(report, out, with_plots=settings.plots)
    if no_plot:
        note(no_plot)
    if settings.config is not None:
        path = write_choice(report, settings.config)
        if path is None:
            note(f"nothing met the target: {settings.config} not written")
        else:
            written.append(path)
    err_console.print(f"[green]wrote[/] {', '.join(str(p) for p in written)}", highlight=False, soft_wrap=True)
    if interrupted:
        raise fail(f"interrupted: partial tune written to {out}", code=130)
