"""Soak: ``sk-deploy serve`` under mixed good and malformed traffic from 32 clients on loopback.

One run, on one machine: export skresnet18 (or take ``--bundle``), start ``sk-deploy serve`` on 127.0.0.1 (ONNX
Runtime CPU, a 4 MB body limit, 5 s header/body deadlines so stalled clients come and go, a 30 s request
deadline), then 32 clients,
each a deterministic random sequence of requests (``--seed``), half good (a real photo as a raw body, a JSON
batch of four, a v2 binary tensor) and half malformed (the kinds of tests/service/test_hostile_corpus.py, plus
clients that go away mid-body and clients that stall their body until the server's 408). A warm-up of
``--warmup`` seconds, then the soak of ``--duration`` seconds, sampling the server's resident size (its own
/proc/PID/status) every second.

It reports: requests sent and answered (each deliberate mid-body disconnect is counted apart: it gets no
answer by design), statuses by kind, server errors (5xx) and transport errors, the good requests' latency
percentiles during the soak, and the server's RSS after the warm-up, at the end and at its highest. Writes
``soak.json`` and ``soak.md`` to ``--out``.

    python benchmarks/service_soak/run.py --images ../shared/data/imagenet-val-1300 --out benchmarks/results/cpu-2core

A benchmark, not a test: it asserts nothing; the figures are what it reports.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import random
import socket
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

from sk_deploy.bench.http_load import load_payloads  # noqa: E402
from sk_deploy.bench.local_server import LocalServer  # noqa: E402
from sk_deploy.bench.machine import describe_machine  # noqa: E402
from sk_deploy.bench.report import write_result  # noqa: E402
from sk_deploy.bench.stats import summarize  # noqa: E402
from sk_deploy.bundle import Bundle  # noqa: E402
from sk_deploy.graph.pipeline import export_bundle  # noqa: E402
from sk_deploy.service.memory import resident_bytes  # noqa: E402
from sk_deploy.settings.graph import ExportSettings  # noqa: E402

CLIENTS = 32
GONE = "disconnect mid-body"
STALL = "stalled body"
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8")


def service_libraries() -> dict[str, str]:
    """Versions of the libraries the service's request handling rests on (beyond describe_machine's)."""
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("pillow", "pydantic", "pydantic-core", "starlette", "httptools", "python-multipart"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


def cpu_flags() -> list[str]:
    """The SIMD flags of this CPU that matter to ONNX Runtime's kernels (from /proc/cpuinfo)."""
    try:
        line = next(x for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("flags"))
    except (OSError, StopIteration):
        return []
    present = set(line.split(":", 1)[1].split())
    return [f for f in SIMD_FLAGS if f in present]


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (90, 140, 200)).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class Kind:
    """One kind of request: how to send it (httpx arguments, or a raw-socket behaviour) and whether it is good."""

    name: str
    good: bool
    method: str = "POST"
    url: str = "/v1/classify"
    arguments: dict[str, Any] = field(default_factory=dict)


def kinds(photos: list[bytes], model: str, item_shape: list[int]) -> list[Kind]:
    """The traffic mix: good kinds first, then malformed ones."""
    jpeg = {"Content-Type": "image/jpeg"}
    v2 = f"/v2/models/{model}/infer"
    values = int(np.prod(item_shape))
    header = json.dumps({"inputs": [{"name": "input", "shape": [1, *item_shape], "datatype": "FP32",
                                     "parameters": {"binary_data_size": values * 4}}]}).encode()
    tensor = np.random.default_rng(0).standard_normal(values).astype("<f4").tobytes()
    small = {"name": "input", "shape": [1, *item_shape], "datatype": "FP32"}
    good = [Kind(f"good photo {i}", True, arguments={"content": p, "headers": jpeg}) for i, p in enumerate(photos)]
    good += [Kind("good JSON batch of 4", True, url="/v1/classify/batch",
                  arguments={"json": {"images": [base64.b64encode(p).decode() for p in photos[:4]]}}),
             Kind("good v2 binary tensor", True, url=v2,
                  arguments={"content": header + tensor,
                             "headers": {"Inference-Header-Content-Length": str(len(header)),
                                         "Content-Type": "application/octet-stream"}})]
    deep = b"[" * 100_000 + b"]" * 100_000
    bad = [
        Kind("not an image", False, arguments={"content": b"hello " * 100, "headers": jpeg}),
        Kind("truncated photo", False, arguments={"content": photos[0][: len(photos[0]) // 3], "headers": jpeg}),
        Kind("decompression bomb", False, arguments={"content": png(5000, 5000), "headers": {"Content-Type":
                                                                                              "image/png"}}),
        Kind("1x4000 PNG", False, arguments={"content": png(1, 4000), "headers": {"Content-Type": "image/png"}}),
        Kind("body over 4 MB", False, arguments={"content": b"\xff" * (4 * 1024 * 1024 + 1), "headers": jpeg}),
        Kind("bad base64", False, arguments={"json": {"image": "%%%"}}),
        Kind("image a number", False, arguments={"json": {"image": 5}}),
        Kind("JSON 100000 deep", False, arguments={"content": b'{"image":' + deep + b"}",
                                                   "headers": {"Content-Type": "application/json"}}),
        Kind("1000 tiny pictures", False, url="/v1/classify/batch",
             arguments={"json": {"images": [base64.b64encode(png(2, 2)).decode()] * 1000}}),
        Kind("v2 parameters not an object", False, url=v2,
             arguments={"json": {"inputs": [{**small, "data": [0.0] * values, "parameters": 5}]}}),
        Kind("v2 NaN", False, url=v2, arguments={
            "content": json.dumps({"inputs": [{**small, "data": [float("nan")] * values}]}),
            "headers": {"Content-Type": "application/json"}}),
        Kind("v2 shape overflow", False, url=v2, arguments={"json": {"inputs": [{**small, "shape": [2**31 - 1] * 8,
                                                                                  "data": [0.0]}]}}),
        Kind("v2 header length superscript", False, url=v2, arguments={
            "content": header + tensor, "headers": {"Inference-Header-Content-Length": "²".encode()}}),
        Kind("GET /v1/classify", False, method="GET"),
        Kind("unknown model", False, url="/v2/models/resnet50/infer", arguments={"json": {"inputs": []}}),
        Kind(GONE, False),
        Kind(STALL, False),
    ]
    return good + bad


@dataclass
class Tally:
    """What the clients saw."""

    sent: int = 0
    answered: int = 0
    disconnects: int = 0
    statuses: Counter[tuple[str, int | str]] = field(default_factory=Counter)
    good_ms: list[float] = field(default_factory=list)
    ms: dict[tuple[str, int | str], list[float]] = field(default_factory=dict)
    measuring: bool = False

    def record(self, kind: Kind, status: int | str, ms: float) -> None:
        """One outcome of a request sent while measuring (an HTTP status, or a transport error's name)."""
        self.statuses[(kind.name, status)] += 1
        self.ms.setdefault((kind.name, status), []).append(ms)
        if isinstance(status, int):
            self.answered += 1
            if kind.good and status == 200:
                self.good_ms.append(ms)


async def raw(host: str, port: int, kind: Kind, body: bytes, stall: float) -> int | str:
    """A client that sends its headers and part of the body, then goes away (GONE) or waits (STALL)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(b"POST /v1/classify HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                     b"Content-Length: %d\r\n\r\n" % len(body) + body[: len(body) // 4])
        await writer.drain()
        if kind.name == GONE:
            await asyncio.sleep(0.05)
            return "gone"
        line = await asyncio.wait_for(reader.readline(), stall + 10)
        return int(line.split()[1]) if line else "closed"
    finally:
        writer.close()


async def client(n: int, url: str, mix: list[Kind], stop: list[float], tally: Tally, seed: int,
                 stall: float) -> None:
    """One client: requests from ``mix``, half good and half malformed, back to back until ``stop[0]``."""
    rng = random.Random(seed * 1000 + n)
    good, bad = [k for k in mix if k.good], [k for k in mix if not k.good]
    host, port = url.removeprefix("http://").split(":")
    async with httpx.AsyncClient(base_url=url, timeout=60, trust_env=False) as http:
        while time.monotonic() < stop[0]:
            kind = rng.choice(good if rng.random() < 0.5 else bad)
            counted = tally.measuring
            tally.sent += counted
            start = time.perf_counter()
            try:
                if kind.name in (GONE, STALL):
                    status = await raw(host, int(port), kind, mix[0].arguments["content"], stall)
                else:
                    status = (await http.request(kind.method, kind.url, **kind.arguments)).status_code
            except (httpx.HTTPError, OSError, TimeoutError) as exc:
                status = type(exc).__name__
            if status == "gone":
                tally.disconnects += counted
                tally.sent -= counted
                continue
            if counted:
                tally.record(kind, status, (time.perf_counter() - start) * 1e3)


async def soak(url: str, pid: int, mix: list[Kind], warmup: float, duration: float, seed: int,
               stall: float) -> dict[str, Any]:
    """Warm up, then soak, sampling the server's RSS every second."""
    tally = Tally()
    stop = [time.monotonic() + warmup + duration]
    tasks = [asyncio.ensure_future(client(n, url, mix, stop, tally, seed, stall)) for n in range(CLIENTS)]
    await asyncio.sleep(warmup)
    rss_warm = resident_bytes(pid)
    tally.measuring = True
    samples = []
    started = time.monotonic()
    while time.monotonic() < stop[0]:
        await asyncio.sleep(1.0)
        samples.append(resident_bytes(pid))
    await asyncio.gather(*tasks)
    seconds = time.monotonic() - started
    await asyncio.sleep(1.0)
    rss_end = resident_bytes(pid)
    latency = summarize(tally.good_ms) if tally.good_ms else None
    server_errors = sum(v for (_, s), v in tally.statuses.items() if isinstance(s, int) and s >= 500)
    transport = sum(v for (_, s), v in tally.statuses.items() if not isinstance(s, int))
    return {
        "seconds": seconds, "sent": tally.sent, "answered": tally.answered, "disconnects": tally.disconnects,
        "server_errors": server_errors, "transport_errors": transport,
        "statuses": [{"kind": k, "status": s, "count": v, "p50_ms": float(np.median(tally.ms[(k, s)])),
                      "max_ms": max(tally.ms[(k, s)])}
                     for (k, s), v in sorted(tally.statuses.items(), key=lambda x: str(x[0]))],
        "good_requests": len(tally.good_ms), "good_per_s": len(tally.good_ms) / seconds,
        "good_latency_ms": latency.__dict__ if latency else None,
        "rss_mb": {"after_warmup": rss_warm / 2**20, "end": rss_end / 2**20, "peak_sampled": max(samples) / 2**20,
                   "end_over_warmup": rss_end / rss_warm},
        "rss_samples_mb": [round(s / 2**20, 1) for s in samples],
    }


def markdown(result: dict[str, Any]) -> str:
    """The report for people."""
    s, rss, lat = result["soak"], result["soak"]["rss_mb"], result["soak"]["good_latency_ms"] or {}
    machine = result["machine"]
    lines = [
        "# Soak: sk-deploy serve under mixed good and malformed traffic", "",
        f"Machine: {machine['cpu']} ({machine.get('cores')} cores, flags {', '.join(result['cpu_flags'])}), "
        f"{result['date']}; load average before {result['load_before']}, after {result['load_after']}. "
        f"Model: {result['model']} at {result['input']}, backend ort-cpu. {CLIENTS} clients on loopback, half good "
        f"requests and half malformed, {s['seconds']:.0f} s after a {result['warmup_s']:g} s warm-up.", "",
        f"- requests sent: **{s['sent']}**, answered: **{s['answered']}** (and {s['disconnects']} clients that "
        f"went away mid-body on purpose, answered by nobody)",
        f"- server errors (5xx): **{s['server_errors']}**; transport errors: {s['transport_errors']}",
        f"- server RSS: {rss['after_warmup']:.0f} MB after the warm-up, **{rss['end']:.0f} MB at the end** "
        f"({rss['end_over_warmup'] - 1:+.1%}), {rss['peak_sampled']:.0f} MB at the highest sample",
        f"- good requests: {s['good_requests']} ({s['good_per_s']:.1f}/s), latency p50 {lat.get('p50', 0):.0f} ms, "
        f"p90 {lat.get('p90', 0):.0f} ms, **p99 {lat.get('p99', 0):.0f} ms**, max {lat.get('max', 0):.0f} ms", "",
        "| kind | status | count | p50 ms | max ms |", "| --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [f"| {row['kind']} | {row['status']} | {row['count']} | {row['p50_ms']:.0f} | {row['max_ms']:.0f} |"
              for row in s["statuses"]]
    libs = {**result["machine"]["libraries"], **result["service_libraries"]}
    lines += ["", "Libraries: " + ", ".join(f"{k} {v}" for k, v in libs.items()) + ".", "", "Reproduce:", "",
              f"    {result['command']}", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, help="bundle to serve (default: export --model into a temp dir)")
    parser.add_argument("--model", default="skresnet18")
    parser.add_argument("--images", type=Path, default=REPO_ROOT.parent / "shared/data/imagenet-val-1300")
    parser.add_argument("--warmup", type=float, default=15.0)
    parser.add_argument("--duration", type=float, default=120.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--input-size", type=int, default=128, help="the exported model's input (square): the soak "
                        "measures the service's robustness, not the model's speed")
    parser.add_argument("--timeout-ms", type=int, default=30_000, help="the server's --timeout-ms (a closed loop of "
                        "32 clients on 2 busy cores queues for seconds)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks/results/cpu-2core")
    args = parser.parse_args()
    command = "python " + " ".join([str(Path(sys.argv[0]).resolve().relative_to(REPO_ROOT)), *sys.argv[1:]])
    stall = 5.0

    with tempfile.TemporaryDirectory() as tmp:
        if args.bundle is None:
            print(f"exporting {args.model}...", flush=True)
            bundle, _ = export_bundle(ExportSettings(model=args.model, out=Path(tmp) / args.model, verify=False,
                                                    input_size=(args.input_size, args.input_size)))
        else:
            bundle = Bundle.open(args.bundle)
        photos = [p.data for p in load_payloads(args.images if args.images.is_dir() else None, limit=8)]
        item_shape = list(bundle.manifest["input"]["shape"][1:])
        mix = kinds(photos, bundle.model_name, item_shape)
        server = LocalServer(bundle.path, "--backend", "ort-cpu", "--no-access-log", "--max-body-mb", "4",
                             "--max-pixels", "4000000", "--header-timeout-ms", str(int(stall * 1e3)),
                             "--body-timeout-ms", str(int(stall * 1e3)), "--timeout-ms", str(args.timeout_ms))
        try:
            server.wait_ready(300)
            load_before = [round(x, 2) for x in os.getloadavg()]
            print(f"soaking {args.warmup:g} s + {args.duration:g} s with {CLIENTS} clients...", flush=True)
            result_soak = asyncio.run(soak(server.url, server.process.pid, mix, args.warmup, args.duration,
                                           args.seed, stall))
            load_after = [round(x, 2) for x in os.getloadavg()]
            healthy = httpx.get(f"{server.url}/healthz", timeout=10, trust_env=False).status_code
        finally:
            server.stop()
        tracebacks = sum("Traceback" in line for line in server.lines)
        result = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "command": command,
            "machine": describe_machine(), "service_libraries": service_libraries(), "cpu_flags": cpu_flags(),
            "load_before": load_before, "load_after": load_after, "model": bundle.model_name,
            "input": "x".join(map(str, item_shape)),
            "warmup_s": args.warmup, "kinds": [k.name for k in mix], "soak": result_soak,
            "healthz_after": healthy, "server_tracebacks": tracebacks,
        }
    print(write_result(args.out, "soak", result, markdown(result)))


if __name__ == "__main__":
    start = time.perf_counter()
    socket.setdefaulttimeout(60)
    main()
    print(f"took {time.perf_counter() - start:.0f} s")
