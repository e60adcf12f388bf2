"""Settings of ``serve``, and the ``[serving]`` table of a ``--config`` file (``tune`` writes it)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field

from sk_deploy.backends import backend_names
from sk_deploy.settings.base import Cli, PositiveInts, Settings, section

#: uvicorn's log levels
LOG_LEVELS = ("critical", "error", "warning", "info", "debug")
BACKEND_HELP = f"auto (the fastest this machine runs that passed its gate), or one of: {', '.join(backend_names())}"


class ServeSettings(Settings):
    """``sk-deploy serve``: a bundle over HTTP (and gRPC)."""

    COMMAND = "serve"
    target: Annotated[str, Cli(argument=True, metavar="BUNDLE|MODEL")] = Field(
        description="A bundle directory, or a registered model name to export first (into "
        "~/.cache/sk-deploy/bundles, reused).")
    backend: Annotated[str, Cli(choices="backend")] = Field("auto", description=f"{BACKEND_HELP}.")
    precision: str = Field("auto", description="auto (the fastest precision whose gate passed for this bundle and "
                           "runs here, said in one line), fp32, fp16, int8 (the bundle must hold that graph), bf16 "
                           "(openvino, on a CPU with native bfloat16) or tf32 (the fp32 graph with TensorFloat-32, "
                           "GPUs only).")
    host: str = Field("127.0.0.1", description="Address to listen on (0.0.0.0 for every interface).")
    port: int = Field(8000, ge=0, le=65535, description="Port (0: any free one, printed).")
    grpc_port: int | None = Field(None, ge=0, le=65535, description="Also serve KServe v2 over gRPC on this port of "
                                  "--host (0: any free one, printed); default: HTTP only.")
    max_batch: int = Field(32, ge=1, description="Largest batch the batcher forms.")
    batch_buckets: PositiveInts = Field((), description="Batch sizes to pad batches to, comma-separated (1,4,16,32), "
                                        "for a backend that captures CUDA graphs (one graph per size); default: the "
                                        "powers of two up to --max-batch.")
    max_delay_ms: float = Field(2.0, ge=0, description="Longest wait for a batch to fill, from its first picture's "
                                "arrival.")
    max_queue: int = Field(256, ge=1, description="Pictures allowed to wait; beyond, 429 with Retry-After.")
    instances: int = Field(1, ge=1, description="Inference threads taking batches from the one queue, each with its "
                           f"share of the cores ({' and '.join(backend_names(parallel=True))}; others run one).")
    config: Path | None = Field(None, description="TOML file of serving settings (table serving: max_batch, "
                                "max_delay_ms, instances; from `sk-deploy tune`); options given here win over it.")
    timeout_ms: float = Field(5000.0, ge=1, description="A request's deadline; past it, 504 and dropped from the "
                              "queue.")
    max_body_mb: float = Field(16.0, ge=0.001, description="Largest request body; beyond, 413.")
    max_pixels: int = Field(40_000_000, ge=1, description="Largest picture, in pixels, decoded (decompression bombs "
                            "are refused before decoding).")
    max_aspect_ratio: float = Field(32.0, ge=1, description="Longest over shortest side of a picture decoded "
                                    "(checked from its header; beyond, 400).")
    decode_threads: int = Field(0, ge=0, description="Threads decoding pictures (0: one per CPU, at most 4).")
    header_timeout_ms: float = Field(10_000.0, ge=1, description="A request's headers must arrive within this long; "
                                     "beyond, 408 and the connection closed.")
    body_timeout_ms: float = Field(30_000.0, ge=1, description="A request's body must arrive within this long after "
                                   "its headers; beyond, 408 and the connection closed.")
    max_connections: int = Field(1024, ge=1, description="Open connections allowed; beyond, 503 and closed.")
    drain_ms: float = Field(1000.0, ge=0, description="On SIGTERM/Ctrl-C, answer 503 to new requests this long "
                            "before stopping; in-flight ones finish.")
    weights: Path | None = Field(None, description="With a model name: checkpoint to export.")
    pretrained: bool = Field(False, description="With a model name: the timm checkpoint from the hub.")
    log_level: Literal[LOG_LEVELS] = Field("info", description="uvicorn log level.")  # type: ignore[valid-type]
    access_log: bool = Field(True, description="Log every request (one line each).")


#: the ``[serving]`` table of a ``--config`` file: serve's batching fields, the same fields
ServingFile = section(ServeSettings, "max_batch", "max_delay_ms", "instances", title="ServingFile")
