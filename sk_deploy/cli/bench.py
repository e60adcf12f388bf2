"""``sk-deploy bench`` (a bundle on every backend x precision x batch) and ``sk-deploy bench-http`` (load on
a running service)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from sk_deploy.backends import bench_variants, default_bench_backends
from sk_deploy.cli import render
from sk_deploy.cli.common import UserError, app, console, err_console, fail, items, note, renamed, split


@app.command("bench")
def bench_command(
    bundle: Annotated[Path, typer.Argument(help="Bundle directory (from `sk-deploy export`).")],
    backends: Annotated[list[str] | None, typer.Option(
        help=f"Comma-separated: {', '.join(default_bench_backends())} (the default: all of these), and the opt-in "
        f"{', '.join(v for v in bench_variants() if v not in default_bench_backends())} (-raw: the exporter's graph "
        "before cleanup; -graph: captured CUDA graphs). PyTorch eager fp32 is always measured first as the "
        "baseline.")] = None,
    precisions: Annotated[list[str] | None, typer.Option(
        help="Comma-separated: fp32, fp16, int8, bf16 (the default: all; rows the bundle or machine cannot run are "
        "skipped with the reason).")] = None,
    batch_sizes: Annotated[list[str] | None, typer.Option(help="Comma-separated batch sizes (default 1,8,32).")]
    = None,
    warmup_ms: Annotated[float, typer.Option(min=0, help="Milliseconds of warm-up runs per row (after a first "
                                             "run).")] = 1000.0,
    duration_ms: Annotated[float, typer.Option(min=0, help="Milliseconds of timed runs per row.")] = 3000.0,
    min_runs: Annotated[int, typer.Option(min=1, help="Timed runs per row at least, however long they take.")] = 5,
    max_runs: Annotated[int, typer.Option(min=1, help="Timed runs per row at most.")] = 100_000,
    threads: Annotated[int, typer.Option(min=0, help="ONNX Runtime intra-op threads (0: its default).")] = 0,
    out: Annotated[Path | None, typer.Option(help="Directory for bench.json, bench.csv, bench.md and the PNG plots "
                                             "(default: bench-results/<bundle name>).")] = None,
    plots: Annotated[bool, typer.Option(help="Draw the PNG plots (needs matplotlib).")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    batch: Annotated[list[str] | None, typer.Option(hidden=True, help="Deprecated: --batch-sizes.")] = None,
    warmup: Annotated[float | None, typer.Option(min=0, hidden=True, help="Deprecated: --warmup-ms.")] = None,
    duration: Annotated[float | None, typer.Option(min=0, hidden=True, help="Deprecated: --duration-ms.")] = None,
) -> None:
    """Measure latency (min/p50/p90/p95/p99/max/mean), throughput and peak memory of a bundle for every
    backend x precision x batch this machine can run, each against PyTorch eager fp32 in the same run; a table
    here and JSON, CSV, Markdown and PNG plots in --out. Ctrl-C writes the rows done so far and exits 130."""
    import signal

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from sk_deploy.bench.latency import DEFAULT_PRECISIONS, BenchConfig, BenchRun, Row
    from sk_deploy.bench.report import build_report, write_report
    from sk_deploy.bundle import Bundle

    sizes_name = "--batch" if batch else "--batch-sizes"
    batch_sizes = renamed(batch_sizes, batch, "--batch", "--batch-sizes")
    warmup_ms = renamed(warmup_ms, warmup, "--warmup", "--warmup-ms", lambda seconds: seconds * 1000)
    duration_ms = renamed(duration_ms, duration, "--duration", "--duration-ms", lambda seconds: seconds * 1000)
    config = BenchConfig(backends=items(backends, "--backends", ",".join(default_bench_backends())),
                         precisions=items(precisions, "--precisions", ",".join(DEFAULT_PRECISIONS)),
                         batches=items(batch_sizes, sizes_name, "1,8,32", int), warmup_s=warmup_ms / 1000,
                         duration_s=duration_ms / 1000, min_runs=min_runs, max_runs=max_runs, threads=threads)
    try:
        run = BenchRun(Bundle.open(bundle), config)
    except UserError as exc:
        raise fail(str(exc)) from None
    out = out or Path("bench-results") / bundle.resolve().name
    command = (f"sk-deploy bench {bundle} --backends {','.join(config.backends)} --precisions "
               f"{','.join(config.precisions)} --batch-sizes {','.join(map(str, config.batches))} --warmup-ms "
               f"{warmup_ms:g} --duration-ms {duration_ms:g}" + (f" --min-runs {min_runs}" if min_runs != 5 else ""))
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
    written, no_plots = write_report(report, out, with_plots=plots)
    if as_json:
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


@app.command("bench-http")
def bench_http_command(
    url: Annotated[str, typer.Argument(help="Base URL of a running `sk-deploy serve`, e.g. http://127.0.0.1:8000.")],
    images: Annotated[Path | None, typer.Option(help="Folder of JPEG/PNG/WebP pictures to post (the first 64; "
                                                "default: 8 generated PNG pictures).")] = None,
    concurrency: Annotated[list[str] | None, typer.Option(help="Comma-separated numbers of concurrent clients, one "
                                                          "closed-loop step each (default 1,4,16,64).")] = None,
    request_rate: Annotated[str | None, typer.Option(help="Comma-separated request rates (requests/s), one "
                                                     "open-loop step each, in place of --concurrency: each request "
                                                     "sent at its instant whether or not earlier ones were answered, "
                                                     "its latency from that instant.")] = None,
    arrivals: Annotated[str, typer.Option(help="With --request-rate: constant (evenly spaced) or poisson (seeded "
                                          "by --seed).")] = "constant",
    seed: Annotated[int, typer.Option(help="Seed of the Poisson arrivals (one seed: the same schedule).")] = 0,
    protocol: Annotated[str, typer.Option(help="With --request-rate: http (raw pictures to URL/v1/classify) or grpc "
                                          "(KServe v2 ModelInfer of the model's input tensor, made client-side, to "
                                          "--grpc-url; URL still answers /readyz and /metrics).")] = "http",
    grpc_url: Annotated[str | None, typer.Option(help="With --protocol grpc: HOST:PORT of the server's KServe v2 "
                                                 "gRPC endpoint.")] = None,
    max_in_flight: Annotated[int, typer.Option(min=1, help="With --request-rate: requests in flight at most; one "
                                               "due beyond it is a drop, as is one whose instant passed more than "
                                               "--timeout-ms ago.")] = 256,
    p99_ms: Annotated[float | None, typer.Option(min=0.001, help="With --request-rate: the p99 target; the knee is "
                                                 "the highest rate meeting it (p99 within it and drops + errors "
                                                 "under 1% of the requests scheduled), every lower rate meeting it "
                                                 "too.")] = None,
    duration_ms: Annotated[float, typer.Option(min=10, help="Milliseconds per step (in-flight requests then "
                                               "finish).")] = 10_000.0,
    max_requests: Annotated[int, typer.Option(min=1, help="Requests per step at most.")] = 10_000,
    timeout_ms: Annotated[float, typer.Option(min=10, help="Milliseconds one request may take.")] = 30_000.0,
    top_k: Annotated[int, typer.Option(min=1, help="top_k asked of the service.")] = 5,
    out: Annotated[Path | None, typer.Option(help="Directory to write bench-http.json and bench-http.md to "
                                             "(open loop: bench-http-rate.json, .md and the PNG plots).")] = None,
    plots: Annotated[bool, typer.Option(help="Open loop: draw the PNG plots into --out (needs matplotlib).")] = True,
    allow_remote: Annotated[bool, typer.Option(help="Allow a host that is not loopback (only a server you run).")]
    = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    duration: Annotated[float | None, typer.Option(min=0.01, hidden=True, help="Deprecated: --duration-ms.")] = None,
    timeout: Annotated[float | None, typer.Option(min=0.01, hidden=True, help="Deprecated: --timeout-ms.")] = None,
) -> None:
    """Load a running classification service: a sweep of concurrent clients posting raw pictures to
    URL/v1/classify (closed loop, the default), or with --request-rate open-loop arrivals at each rate over HTTP
    or gRPC (achieved rate, drops, the knee under --p99-ms); requests/s, latency percentiles, errors by status,
    and the server's own batch sizes read from URL/metrics around each step. Bounded by --duration-ms and
    --max-requests per step; loopback only unless --allow-remote. Ctrl-C keeps the finished steps (exit 130)."""
    import dataclasses

    duration_ms = renamed(duration_ms, duration, "--duration", "--duration-ms", lambda seconds: seconds * 1000)
    timeout_ms = renamed(timeout_ms, timeout, "--timeout", "--timeout-ms", lambda seconds: seconds * 1000)
    if request_rate is not None:
        if concurrency:
            raise fail("--concurrency (closed loop) and --request-rate (open loop) are two modes: give one")
        _bench_rates(url, images, request_rate, arrivals, seed, protocol, grpc_url, max_in_flight, p99_ms,
                     duration_ms, max_requests, timeout_ms, top_k, out, plots, allow_remote, as_json)
        return
    if protocol != "http" or p99_ms is not None:
        raise fail("--protocol and --p99-ms go with --request-rate (the open loop)")

    from sk_deploy.bench.http_load import LoadConfig, StepResult, check_url, load_payloads, run_sweep
    from sk_deploy.bench.report import build_http_report, http_table, write_http_report

    config = LoadConfig(url=url, concurrency=items(concurrency, "--concurrency", "1,4,16,64", int),
                        duration_s=duration_ms / 1000, max_requests=max_requests, timeout_s=timeout_ms / 1000,
                        top_k=top_k, allow_remote=allow_remote)
    try:
        config = dataclasses.replace(config, url=check_url(url, allow_remote))
        payloads = load_payloads(images)
    except UserError as exc:
        raise fail(str(exc)) from None
    command = (f"sk-deploy bench-http {config.url}" + (f" --images {images}" if images else "")
               + f" --concurrency {','.join(map(str, config.concurrency))} --duration-ms {duration_ms:g} "
               f"--max-requests {max_requests}")
    steps: list[StepResult] = []

    def step_line(step: StepResult) -> str:
        p50 = f"p50 {step.latency.p50:.1f} ms" if step.latency else "no successful request"
        return (f"{step.concurrency} clients: {step.requests} requests, {step.requests_per_s:.1f}/s, {p50}, "
                f"{step.errors} errors")

    interrupted = _with_progress(lambda on_start, on_step: run_sweep(config, payloads, on_start=on_start,
                                                                     on_step=on_step, results=steps),
                                 lambda n: f"{n} clients", step_line)
    report = build_http_report(config, steps, len(payloads), command, interrupted)
    if as_json:
        render.as_json(report)
    else:
        render.show(http_table(report))
    if out is not None:
        written = write_http_report(report, out)
        console.print(f"[green]wrote[/] {', '.join(str(p) for p in written)}", highlight=False, soft_wrap=True)
    if interrupted:
        raise fail(f"interrupted after {len(steps)} step(s)" + (f"; partial report in {out}" if out else ""), code=130)


def _bench_rates(url: str, images: Path | None, request_rate: str, arrivals: str, seed: int, protocol: str,
                 grpc_url: str | None, max_in_flight: int, p99_ms: float | None, duration_ms: float,
                 max_requests: int, timeout_ms: float, top_k: int, out: Path | None, plots: bool, allow_remote: bool,
                 as_json: bool) -> None:
    """bench-http's open loop: every rate in turn, the report, the knee."""
    import dataclasses

    from sk_deploy.bench.http_load import check_url, load_payloads
    from sk_deploy.bench.open_loop import RateConfig, RateRun, RateStep, check_config, run_rates
    from sk_deploy.bench.rate_report import build_rate_report, knee_line, rate_table, write_rate_report

    config = RateConfig(url=url, rates=split(request_rate, "--request-rate", float), arrivals=arrivals, seed=seed,
                        duration_s=duration_ms / 1000, max_requests=max_requests, max_in_flight=max_in_flight,
                        timeout_s=timeout_ms / 1000, top_k=top_k, p99_ms=p99_ms, protocol=protocol,
                        grpc_url=grpc_url, allow_remote=allow_remote)
    try:
        config = dataclasses.replace(config, url=check_url(url, allow_remote))
        check_config(config)
        payloads = load_payloads(images)
    except UserError as exc:
        raise fail(str(exc)) from None
    command = (f"sk-deploy bench-http {config.url}" + (f" --images {images}" if images else "")
               + f" --request-rate {','.join(f'{r:g}' for r in config.rates)} --arrivals {arrivals}"
               + (f" --seed {seed}" if arrivals == "poisson" else "")
               + (f" --protocol grpc --grpc-url {grpc_url}" if protocol == "grpc" else "")
               + f" --duration-ms {duration_ms:g} --max-requests {max_requests} --max-in-flight {max_in_flight}"
               + (f" --p99-ms {p99_ms:g}" if p99_ms is not None else ""))
    run = RateRun()

    def step_line(step: RateStep) -> str:
        p99 = f"p99 {step.latency.p99:.1f} ms" if step.latency else "no successful request"
        return (f"{step.rate:g}/s offered: {step.sent} sent, {step.dropped} dropped, {step.errors} errors, "
                f"{step.ok / step.seconds if step.seconds else 0:.1f} ok/s, {p99}")

    interrupted = _with_progress(lambda on_start, on_step: run_rates(config, payloads, on_start=on_start,
                                                                     on_step=on_step, run=run),
                                 lambda rate: f"{rate:g} requests/s", step_line)
    report = build_rate_report(config, run, len(payloads), command, interrupted)
    if as_json:
        render.as_json(report)
    else:
        render.show(rate_table(report))
        line = knee_line(report)
        if line:
            console.print(line, highlight=False, soft_wrap=True)
    if out is not None:
        written, no_plots = write_rate_report(report, out, with_plots=plots)
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
        except UserError as exc:
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            interrupted = True
    if interrupted:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return interrupted
