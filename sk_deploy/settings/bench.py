"""Settings of the benchmarks: ``bench`` (a bundle on every backend), ``bench-http`` (load on a running service,
closed or open loop) and ``tune`` (the serving settings with the highest sustained rate under a p99 target)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from sk_deploy.backends import bench_variants, default_bench_backends
from sk_deploy.settings.base import BATCH_PROFILE, Cli, FloatList, PositiveInts, Settings, StrList
from sk_deploy.settings.serve import BACKEND_HELP, ServeSettings

#: open-loop arrivals: evenly spaced, or a seeded Poisson process
ARRIVALS = ("constant", "poisson")
PROTOCOLS = ("http", "grpc")
JSON = Annotated[bool, Cli(name="--json")]
IMAGES_HELP = "Folder of JPEG/PNG/WebP pictures to post (the first 64; default: 8 generated PNG pictures)."


class BenchSettings(Settings):
    """``sk-deploy bench``: latency and throughput of a bundle, backend x precision x batch."""

    COMMAND = "bench"
    bundle: Annotated[Path, Cli(argument=True)] = Field(description="Bundle directory (from `sk-deploy export`).")
    backends: StrList = Field((), description=f"Comma-separated: {', '.join(default_bench_backends())} (the default: "
                              "all of these), and the opt-in "
                              f"{', '.join(v for v in bench_variants() if v not in default_bench_backends())} (-raw: "
                              "the exporter's graph before cleanup; -graph: captured CUDA graphs). PyTorch eager fp32 "
                              "is always measured first as the baseline.")
    precisions: StrList = Field((), description="Comma-separated: fp32, fp16, int8, bf16 (the default: all; rows the "
                                "bundle or machine cannot run are skipped with the reason).")
    batch_sizes: PositiveInts = Field(tuple(int(n) for n in BATCH_PROFILE.split(":")), min_length=1,
                                      description="Comma-separated batch sizes (default: the export's batch profile).")
    warmup_ms: float = Field(1000.0, ge=0, description="Milliseconds of warm-up runs per row (after a first run).")
    duration_ms: float = Field(3000.0, ge=0, description="Milliseconds of timed runs per row.")
    min_runs: int = Field(5, ge=1, description="Timed runs per row at least, however long they take.")
    max_runs: int = Field(100_000, ge=1, description="Timed runs per row at most.")
    threads: int = Field(0, ge=0, description="ONNX Runtime intra-op threads (0: one per CPU where the process is "
                         "confined to fewer than the machine has, else ONNX Runtime's default).")
    out: Path | None = Field(None, description="Directory for bench.json, bench.csv, bench.md and the PNG plots "
                             "(default: bench-results/<bundle name>).")
    plots: bool = Field(True, description="Draw the PNG plots (needs matplotlib).")
    as_json: JSON = Field(False, description="Print JSON instead of tables.")


class LoadSettings(Settings):
    """``sk-deploy bench-http``: load on a running service. Closed loop (``--concurrency``, the default) or open
    loop (``--request-rate``): one command, as perf_analyzer's ``--concurrency-range`` and
    ``--request-rate-range`` are, since both drive the same target with the same pictures and bounds and a user
    confirms one with the other."""

    COMMAND = "bench-http"
    url: Annotated[str, Cli(argument=True)] = Field(description="Base URL of a running `sk-deploy serve`, e.g. "
                                                    "http://127.0.0.1:8000.")
    images: Path | None = Field(None, description=IMAGES_HELP)
    concurrency: PositiveInts = Field((1, 4, 16, 64), description="Comma-separated numbers of concurrent clients, "
                                      "one closed-loop step each.")
    request_rate: FloatList = Field((), description="Comma-separated request rates (requests/s), one open-loop step "
                                    "each, in place of --concurrency: each request sent at its instant whether or not "
                                    "earlier ones were answered, its latency from that instant.")
    arrivals: Literal[ARRIVALS] = Field("constant", description="With --request-rate: constant (evenly spaced) or "  # type: ignore[valid-type]
                                        "poisson (seeded by --seed).")
    seed: int = Field(0, description="Seed of the Poisson arrivals (one seed: the same schedule).")
    protocol: Literal[PROTOCOLS] = Field("http", description="With --request-rate: http (raw pictures to "  # type: ignore[valid-type]
                                         "URL/v1/classify) or grpc (KServe v2 ModelInfer of the model's input tensor, "
                                         "made client-side, to --grpc-url; URL still answers /readyz and /metrics).")
    grpc_url: str | None = Field(None, description="With --protocol grpc: HOST:PORT of the server's KServe v2 gRPC "
                                 "endpoint.")
    max_in_flight: int = Field(256, ge=1, description="With --request-rate: requests in flight at most; one due "
                               "beyond it is a drop, as is one whose instant passed more than --timeout-ms ago.")
    p99_ms: float | None = Field(None, ge=0.001, description="With --request-rate: the p99 target; the knee is the "
                                 "highest rate meeting it (p99 within it and drops + errors under 1% of the requests "
                                 "scheduled), every lower rate meeting it too.")
    duration_ms: float = Field(10_000.0, ge=10, description="Milliseconds per step (in-flight requests then "
                               "finish).")
    max_requests: int = Field(10_000, ge=1, description="Requests per step at most.")
    timeout_ms: float = Field(30_000.0, ge=10, description="Milliseconds one request may take.")
    top_k: int = Field(5, ge=1, description="top_k asked of the service.")
    out: Path | None = Field(None, description="Directory to write bench-http.json and bench-http.md to (open loop: "
                             "bench-http-rate.json, .md and the PNG plots).")
    plots: bool = Field(True, description="Open loop: draw the PNG plots into --out (needs matplotlib).")
    allow_remote: bool = Field(False, description="Allow a host that is not loopback (only a server you run).")
    as_json: JSON = Field(False, description="Print JSON instead of tables.")


_serve = ServeSettings.model_fields


class TuneSettings(Settings):
    """``sk-deploy tune``: candidates of serve's batching settings, each served on loopback and driven open-loop."""

    COMMAND = "tune"
    bundle: Annotated[Path, Cli(argument=True)] = Field(description="Bundle directory (from `sk-deploy export`).")
    p99_ms: float = Field(ge=0.001, description="The p99 latency target: a rate meets it when its p99 is within it "
                          "and drops + errors are under 1% of the requests scheduled.")
    backend: Annotated[str, Cli(choices="backend")] = Field(
        _serve["backend"].default, description=f"The backend to serve on, as serve's --backend: {BACKEND_HELP}.")
    precision: str = Field(_serve["precision"].default, description="auto, fp32, fp16, int8, bf16 or tf32, as serve's "
                           "--precision.")
    max_batch: PositiveInts = Field((1, 4, 8, 16), description="Candidate max batch sizes, comma-separated.")
    max_delay_ms: FloatList = Field((0.0, 2.0, 5.0, 10.0), description="Candidate max queue delays (ms), "
                                    "comma-separated.")
    instances: PositiveInts = Field((1, 2), description="Candidate instance counts, comma-separated (1 only where the "
                                    "backend runs one instance; the report says why).")
    duration_ms: float = Field(2000.0, ge=100, description="Milliseconds of each open-loop step (4 per candidate, "
                               "after a closed-loop probe of half as long).")
    budget_ms: float = Field(540_000.0, ge=1000, description="Milliseconds the whole tune may take; candidates that "
                             "would start past it are listed as not run (540000: 9 minutes).")
    finalists: int = Field(3, ge=0, description="Candidates with the highest sustained rates served again and held at "
                           "that rate (then lower) for 5 x --duration-ms (short steps flatter a rate just above "
                           "capacity); the choice is among them (0: none).")
    max_queue: int = Field(_serve["max_queue"].default, ge=1, description="Each server's --max-queue.")
    max_in_flight: int = Field(LoadSettings.model_fields["max_in_flight"].default, ge=1,
                               description="Open-loop requests in flight at most.")
    arrivals: Literal[ARRIVALS] = Field("constant", description="Open-loop arrivals: constant or poisson (seeded by "  # type: ignore[valid-type]
                                        "--seed).")
    seed: int = Field(0, description="Seed of the Poisson arrivals.")
    images: Path | None = Field(None, description=IMAGES_HELP)
    out: Path | None = Field(None, description="Directory for tune.json, tune.md and tune.png (default: "
                             "tune-results/<bundle name>).")
    config: Path | None = Field(None, description="Write the chosen settings to this TOML file (serve --config and "
                                "triton-repo --config take it).")
    plots: bool = Field(True, description="Draw tune.png (needs matplotlib).")
    as_json: JSON = Field(False, description="Print JSON instead of tables.")
