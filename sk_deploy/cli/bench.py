"""``sk-deploy bench`` (a bundle on every backend x precision x batch) and ``sk-deploy bench-http`` (load on
a running service)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from sk_deploy.backends import default_bench_backends
from sk_deploy.cli import render
from sk_deploy.cli.common import console, err_console, fail, note
from sk_deploy.cli.options import command
from sk_deploy.errors import SkDeployError
from sk_deploy.settings.base import command_line
from sk_deploy.settings.bench import BenchSettings, LoadSettings


@command(BenchSettings)
def bench_command(settings: BenchSettings) -> None:
    """Measure latency (min/p50/p90/p95/p99/max/mean), throughput and peak memory of a bundle for every
    backend x precision x batch this machine can run, each against PyTorch eager fp32 in the same run; a table
    here and JSON, CSV, Markdown and PNG plots in --out. Ctrl-C writes the rows done so far and exits 130."""
    import signal

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sk_deploy.bench.latency import DEFAULT_PRECISIONS, BenchConfig, BenchRun, Row
    from sk_deploy.bench.report import build_report, write_report
    from sk_deploy.bundle import Bundle

    config = BenchConfig(backends=settings.backends or default_bench_backends(),
                         precisions=settings.precisions or DEFAULT_PRECISIONS, batches=settings.batch_sizes,
                         warmup_s=settings.warmup_ms / 1000, duration_s=settings.duration_ms / 1000,
                         min_runs=settings.min_runs, max_runs=settings.max_runs, threads=settings.threads)
    bundle = settings.bundle
    try:
        run = BenchRun(Bundle.open(bundle), config)
    except SkDeployError as exc:
        raise fail(str(exc)) from None
    out = settings.out or Path("bench-results") / bundle.resolve().name
    command = command_line(settings.model_copy(update={"backends": config.backends, "precisions": config.precisions}),
                           always=("backends", "precisions", "batch_sizes", "warmup_ms", "duration_ms"))
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    interrupted = False
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("starting", total=run.planned)

        def on_start(text: str) -> None:
            bar.update(task, description=text)
            if not err_console.is_terminal:  # no live bar in a log: a line per row started (a compile takes minutes)
                err_console.print(f"{text}...", highlight=False, soft_wrap=True)

        def on_row(row: Row, cells: int) -> None:
            bar.advance(task, cells)
            if row.status == "ok" and row.latency is not None:  # a skipped row is listed once, in the summary
                ratio = f", {row.vs_baseline['speedup_p50']:.2f}x eager" if row.vs_baseline else ""
                bar.console.print(f"[green]done[/] {row.label}: p50 {row.latency.p50:.3f} ms, "
                                  f"{row.images_per_s:.1f} images/s{ratio}", highlight=False)

        try:
            run.execute(on_start=on_start, on_row=on_row)
        except KeyboardInterrupt:
            interrupted = True
    if interrupted:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the partial report short
    report = build_report(run, command, interrupted)
    written, no_plots = write_report(report, out, with_plots=settings.plots)
    if settings.as_json:
        render.as_json(report)
    else:
        _bench_summary(report)
    if no_plots:
        note(no_plots)
    err_console.print(f"[green]wrote[/] {', '.join(str(p) for p in written)}", highlight=False, soft_wrap=True)
    if interrupted:
        done = sum(1 for r in report["rows"] if r["status"] == "ok")
        raise fail(f"interrupted: partial report of the {done} measured row(s) so far written to {out}", code=130)


def _bench_summary(report: dict) -> None:
    """The measured table, the machine, and the rows not measured, once each, in one compact block."""
    from sk_deploy.bench.machine import describe_short, machine_libraries
    from sk_deploy.bench.report import rich_table

    render.show(rich_table(report))
    console.print(f"machine: {describe_short(report['machine'])}; {machine_libraries(report['machine'])}",
                  highlight=False, soft_wrap=True)
    skipped: dict[str, list[str]] = {}
    for row in report["rows"]:
        if row["status"] != "ok":
            where = f" batch {row['batch']}" if row["batch"] is not None else ""
            skipped.setdefault(row["reason"], []).append(f"{row['backend']} {row['precision']}{where}")
    if skipped:
        count = sum(map(len, skipped.values()))
        console.print(f"[yellow]not measured[/] ({count} row{'' if count == 1 else 's'}):", highlight=False)
        for reason, rows in skipped.items():
            console.print(f"  {', '.join(rows)}: {reason}", highlight=False, soft_wrap=True)


@command(LoadSettings)
def bench_http_command(settings: LoadSettings) -> None:
    """Load a running classification service: a sweep of concurrent clients posting raw pictures to
    URL/v1/classify (closed loop, the default), or with --request-rate open-loop arrivals at each rate over HTTP
    or gRPC (achieved rate, drops, the knee under --p99-ms); requests/s, latency percentiles, errors by status,
    and the server's own batch sizes read from URL/metrics around each step. Bounded by --duration-ms and
    --max-requests per step; loopback only unless --allow-remote. Ctrl-C keeps the finished steps (exit 130)."""
    import dataclasses

    if settings.request_rate:
        if "concurrency" in settings.model_fields_set:
            raise fail("--concurrency (closed loop) and --request-rate (open loop) are two modes: give one")
        _bench_rates(settings)
        return
    if settings.protocol != "http" or settings.p99_ms is not None:
        raise fail("--protocol and --p99-ms go with --request-rate (the open loop)")

    from sk_deploy.bench.http_load import LoadConfig, StepResult, check_url, load_payloads, run_sweep
    from sk_deploy.bench.report import build_http_report, http_table, write_http_report

    config = LoadConfig(url=settings.url, concurrency=settings.concurrency, duration_s=settings.duration_ms / 1000,
                        max_requests=settings.max_requests, timeout_s=settings.timeout_ms / 1000,
                        top_k=settings.top_k, allow_remote=settings.allow_remote)
    try:
        config = dataclasses.replace(config, url=check_url(settings.url, settings.allow_remote))
        payloads = load_payloads(settings.images)
    except SkDeployError as exc:
        raise fail(str(exc)) from None
    command = command_line(settings.model_copy(update={"url": config.url}),
                           always=("concurrency", "duration_ms", "max_requests"))
    steps: list[StepResult] = []

    def step_line(step: StepResult) -> str:
        p50 = f"p50 {step.latency.p50:.1f} ms" if step.latency else "no successful request"
        return (f"{step.concurrency} clients: {step.requests} requests, {step.requests_per_s:.1f}/s, {p50}, "
                f"{step.errors} errors")

    interrupted = _with_progress(lambda on_start, on_step: run_sweep(config, payloads, on_start=on_start,
                                                                     on_step=on_step, results=steps),
                                 lambda n: f"{n} clients", step_line)
    report = build_http_report(config, steps, len(payloads), command, interrupted)
    out = settings.out
    if settings.as_json:
        render.as_json(report)
    else:
        render.show(http_table(report))
    if out is not None:
        written = write_http_report(report, out)
        console.print(f"[green]wrote[/] {', '.join(str(p) for p in written)}", highlight=False, soft_wrap=True)
    if interrupted:
        raise fail(f"interrupted after {len(steps)} step(s)" + (f"; partial report in {out}" if out else ""), code=130)


def _bench_rates(settings: LoadSettings) -> None:
    """bench-http's open loop: every rate in turn, the report, the knee."""
    import dataclasses

    from sk_deploy.bench.http_load import check_url, load_payloads
    from sk_deploy.bench.open_loop import RateConfig, RateRun, RateStep, check_config, run_rates
    from sk_deploy.bench.rate_report import build_rate_report, knee_line, rate_table, write_rate_report

    config = RateConfig(url=settings.url, rates=settings.request_rate, arrivals=settings.arrivals, seed=settings.seed,
                        duration_s=settings.duration_ms / 1000, max_requests=settings.max_requests,
                        max_in_flight=settings.max_in_flight, timeout_s=settings.timeout_ms / 1000,
                        top_k=settings.top_k, p99_ms=settings.p99_ms, protocol=settings.protocol,
                        grpc_url=settings.grpc_url, allow_remote=settings.allow_remote)
    try:
        config = dataclasses.replace(config, url=check_url(settings.url, settings.allow_remote))
        check_config(config)
        payloads = load_payloads(settings.images)
    except SkDeployError as exc:
        raise fail(str(exc)) from None
    command = command_line(settings.model_copy(update={"url": config.url}),
                           always=("arrivals", "duration_ms", "max_requests", "max_in_flight"))
    run = RateRun()

    def step_line(step: RateStep) -> str:
        p99 = f"p99 {step.latency.p99:.1f} ms" if step.latency else "no successful request"
        return (f"{step.rate:g}/s offered: {step.sent} sent, {step.dropped} dropped, {step.errors} errors, "
                f"{step.ok / step.seconds if step.seconds else 0:.1f} ok/s, {p99}")

    interrupted = _with_progress(lambda on_start, on_step: run_rates(config, payloads, on_start=on_start,
                                                                     on_step=on_step, run=run),
                                 lambda rate: f"{rate:g} requests/s", step_line)
    report = build_rate_report(config, run, len(payloads), command, interrupted)
    out = settings.out
    if settings.as_json:
        render.as_json(report)
    else:
        render.show(rate_table(report))
        line = knee_line(report)
        if line:
            console.print(line, highlight=False, soft_wrap=True)
    if out is not None:
        written, no_plots = write_rate_report(report, out, with_plots=settings.plots)
        if no_plots:
            note(no_plots)
        err_console.print(f"[green]wrote[/] {', '.join(str(p) for p in written)}", highlight=False, soft_wrap=True)
    if interrupted:
        raise fail(f"interrupted after {len(run.steps)} rate(s)" + (f"; partial report in {out}" if out else ""),
                   code=130)


def _with_progress(run: Callable[[Callable[[Any], None], Callable[[Any], None]], Any],
                   starting: Callable[[Any], str], finished: Callable[[Any], str]) -> bool:
    """``run(on_start, on_step)`` under a spinner naming the step under way (``starting``) and a line per step
    done (``finished``); a person's error is one line; True when Ctrl-C stopped it (a second one then ignored,
    so the partial report is written)."""
    import signal

    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    interrupted = False
    columns = (SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn())
    with Progress(*columns, console=err_console, transient=True) as bar:
        task = bar.add_task("waiting for the server")
        try:
            run(lambda value: bar.update(task, description=starting(value)),
                lambda step: bar.console.print(f"[green]done[/] {finished(step)}", highlight=False))
        except SkDeployError as exc:
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            interrupted = True
    if interrupted:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return interrupted
