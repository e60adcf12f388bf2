"""What the commands print: rich tables and one-line summaries, kept apart from the commands themselves."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.table import Table

from sk_deploy.cli.common import console, err_console, waiting
from sk_deploy.errors import SkDeployError

if TYPE_CHECKING:
    from pathlib import Path

    from sk_deploy.bench.tune import Candidate
    from sk_deploy.bundle import Bundle
    from sk_deploy.deploy.triton import TritonResult
    from sk_deploy.graph.verify import VerifyReport
    from sk_deploy.machine import Machine
    from sk_deploy.precision.accuracy import AccuracyReport
    from sk_deploy.runtime.classify import Prediction


def as_json(payload: Any) -> None:
    """``payload`` as indented strict JSON on stdout (dataclasses as dicts, paths and other objects as strings,
    non-finite figures as null)."""
    import dataclasses

    from sk_deploy.jsonout import dumps

    def encode(value: Any) -> Any:
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return dataclasses.asdict(value)
        return str(value)

    print(dumps(payload, default=encode, indent=2))


def show(table: Table) -> None:
    """A table on stdout, its title a line of its own above it: a title (a path, a long model name) never wraps
    to the width of the columns below it."""
    if table.title:
        console.print(str(table.title), highlight=False, soft_wrap=True, markup=False, style="italic")
        table.title = None
    console.print(table)


def plain(text: str) -> None:
    """One line on stdout, no markup guessing, no wrapping."""
    console.print(text, highlight=False, soft_wrap=True)


def faster_tip(bundle: Bundle, backend: str, precision: str, machine: Machine) -> None:
    """One line (on stderr) naming a faster precision that passed its gate in the bundle and runs here, if any."""
    from sk_deploy.runtime.cpu_choice import faster_tip as tip_for

    tip = tip_for(bundle, backend, precision, machine)
    if tip:
        err_console.print(f"[cyan]{tip}[/]", highlight=False, soft_wrap=True)


def bf16_gate(bundle: Path, images: Path | None) -> None:
    """After export: the bf16 gate measured where this CPU computes bfloat16 natively (``--precision auto`` then
    serves it), one line on stderr either way."""
    from sk_deploy.precision.pipeline import gate_bf16_where_native

    try:
        with waiting("measuring the bf16 gate...") as status:
            result = gate_bf16_where_native(bundle, images,
                                            lambda message, total: status.update(f"bf16: {message}..."))
    except SkDeployError as exc:
        result = f"the bf16 gate could not be measured: {exc}"
    if isinstance(result, str):
        err_console.print(f"[dim]{result}[/]", highlight=False, soft_wrap=True)
        return
    figures = result.accuracy
    verdict = "passed: --precision auto serves bf16 here" if figures.passed else \
        f"failed ({'; '.join(figures.failures)}): --precision auto serves fp32"
    err_console.print(f"bf16 gate {verdict} (mean cosine {figures.agreement.cosine_mean:.5f} against fp32)",
                      highlight=False, soft_wrap=True)


def models_table(rows: list[tuple[str, ...]]) -> None:
    """The registered networks: name, params, GMACs, input, pretrained source."""
    table = Table(title="Registered models")
    for column, justify in (("name", "left"), ("params", "right"), ("GMACs", "right"),
                            ("input", "left"), ("pretrained (Hugging Face hub)", "left")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        table.add_row(*row)
    show(table)


def predictions_table(image: str, ran: str, ranked: list[Prediction]) -> None:
    """One picture's top-k: rank, class index, label, probability."""
    console.print(f"[bold]{image}[/] ({ran})", highlight=False, soft_wrap=True)
    table = Table()
    table.add_column("#", justify="right")
    table.add_column("class", justify="right")
    table.add_column("label")
    table.add_column("probability", justify="right")
    for i, p in enumerate(ranked, 1):
        table.add_row(str(i), str(p.index), p.label, f"{p.probability:.4f}")
    show(table)


def size(num_bytes: int) -> str:
    """``12.3 MB`` or ``45.6 kB``."""
    return f"{num_bytes / 1e6:.1f} MB" if num_bytes >= 1e5 else f"{num_bytes / 1e3:.1f} kB"


def shape(dims: list[object] | None) -> str:
    """``1x3x224x224``, ``?`` when unknown."""
    return "?" if dims is None else "x".join(str(d) for d in dims)


def verify_table(report: VerifyReport) -> None:
    """The parity table of a verification and the thresholds it was held to."""
    table = Table(title=f"parity against PyTorch: {report.count} images, {report.images}", title_justify="left")
    table.add_column("file", no_wrap=True)
    for column in ("max abs", "mean abs", "min cosine", "top-1", "top-5"):
        table.add_column(column, justify="right")
    table.add_column("result")
    for item in report.files:
        result = "[green]pass[/]" if item.passed else "[red]FAIL[/]: " + "; ".join(item.failures)
        table.add_row(
            item.file, f"{item.max_abs:.2e}", f"{item.mean_abs:.2e}", f"{item.min_cosine:.7f}",
            f"{item.top1_agreement:.0%}", f"{item.top5_overlap:.0%}", result,
        )
    show(table)
    thresholds = report.thresholds
    console.print(
        f"thresholds: max abs <= {thresholds.max_abs:g}, cosine >= {thresholds.min_cosine}, "
        f"top-1 >= {thresholds.min_top1:.0%}", highlight=False,
    )


def accuracy_table(reports: list[AccuracyReport], title: str) -> None:
    """The accuracy table of precision graphs against float32, with each gate's verdict."""
    table = Table(title=title, title_justify="left")
    table.add_column("file", no_wrap=True)
    for column in ("cosine mean / min", "SQNR dB", "top-1 agree", "top-5 overlap", "max abs"):
        table.add_column(column, justify="right")
    table.add_column("gate")
    for r in reports:
        g = r.agreement
        verdict = "[green]pass[/]" if r.passed else "[red]FAIL[/]: " + "; ".join(r.failures)
        table.add_row(r.file, f"{g.cosine_mean:.5f} / {g.cosine_min:.5f}", f"{g.sqnr_db:.1f}",
                      f"{g.top1_agreement:.1%}", f"{g.top5_overlap:.1%}", f"{g.max_abs:.4f}", verdict)
    show(table)


def bundle_table(bundle: Bundle) -> None:
    """The files of a bundle after export (role, input, nodes, size) and the SK select rewrite's count."""
    table = Table(title=f"bundle {bundle.path}", title_justify="left")
    table.add_column("file", no_wrap=True)
    for column in ("role", "input", "nodes", "size"):
        table.add_column(column, justify="right" if column in ("nodes", "size") else "left")
    for name, entry in bundle.file_entries().items():
        described = entry.get("input")
        table.add_row(
            name, entry.get("role", ""),
            f"{described.get('dtype', '?')} {shape(described.get('shape'))}" if described else "-",
            str(entry.get("nodes", "")), size(entry["bytes"]),
        )
    show(table)
    select = bundle.stage("optimize")["sk_select"]
    plain(f"SK select blocks rewritten: {select['rewritten']}, skipped: {len(select['skipped'])}")
    for skipped in select["skipped"]:
        plain(f"  skipped {skipped['block']}: {skipped['reason']}")


def inspect_tables(summary: dict[str, Any]) -> None:
    """``sk-deploy inspect``: files, inputs and outputs, op histogram, verification state."""
    files = summary["files"]
    if "bundle" in summary:
        weights = summary["model"].get("weights", {})
        plain(f"bundle {summary['bundle']}: {summary['model'].get('name')} (weights: {weights.get('source', '?')})")
    overview = Table(title="files", title_justify="left")
    overview.add_column("file", no_wrap=True)
    for column in ("size", "opset", "nodes", "rank-5 tensors"):
        overview.add_column(column, justify="right")
    for name, info in files.items():
        overview.add_row(name, size(info["bytes"]), str(info["opset"]), str(info["nodes"]), str(info["rank5_tensors"]))
    show(overview)
    io = Table(title="inputs and outputs", title_justify="left")
    for column in ("file", "", "name", "dtype", "shape"):
        io.add_column(column, no_wrap=True)
    for name, info in files.items():
        for kind in ("inputs", "outputs"):
            for value in info[kind]:
                io.add_row(name, kind[:-1], value["name"], value["dtype"], shape(value["shape"]))
    show(io)
    ops = Table(title="op histogram", title_justify="left")
    ops.add_column("op")
    for name in files:
        ops.add_column(name, justify="right")
    all_ops = sorted({op for info in files.values() for op in info["ops"]},
                     key=lambda op: -max(info["ops"].get(op, 0) for info in files.values()))
    for op in all_ops:
        ops.add_row(op, *(str(info["ops"].get(op, 0)) for info in files.values()))
    ops.add_row("[bold]total[/]", *(f"[bold]{info['nodes']}[/]" for info in files.values()))
    show(ops)
    verify = summary.get("stages", {}).get("verify")
    if verify:
        state = "[green]passed[/]" if verify["passed"] else "[red]failed[/]"
        console.print(f"verification {state} on {verify['count']} images ({verify['images']})")


def engine_line(path: str, entry: dict[str, Any]) -> None:
    """What ``sk-deploy build`` wrote: size, TensorRT, GPU, profile, build time, device memory."""
    gpu, trt, profile = entry["gpu"], entry["tensorrt"], entry["profile"]
    plain(f"[green]wrote[/] {path}: {size(entry['bytes'])}, TensorRT {trt['version']}, "
          f"{gpu['name']} (sm {'.'.join(map(str, gpu['compute_capability']))}), batch "
          f"{profile['min']}:{profile['opt']}:{profile['max']}, built in "
          f"{entry['build_seconds']} s, device memory {size(entry['device_memory'])}")
    if "layer_precision" in entry:
        from sk_deploy.engines.inspect import PrecisionSummary

        plain(f"precision (engine inspector): {PrecisionSummary(**entry['layer_precision']).line()}")


def triton_lines(result: TritonResult) -> None:
    """What ``sk-deploy triton-repo`` wrote, and how to serve it."""
    plan = result.plan
    batching = f"max batch {plan.max_batch}, queue delay {plan.max_queue_delay_us} us" + (
        f", preferred {', '.join(map(str, plan.preferred_batch))}" if plan.preferred_batch else "")
    runs = plan.platform or f"backend {plan.triton_backend}"
    source = (f"the bundle (sk-deploy's Predictor, {plan.parameters['runtime']} {plan.parameters['precision']})"
              if plan.triton_backend == "python" else plan.source)
    plain(f"[green]wrote[/] {result.path}: {runs} from {source}, input {plan.input.name} "
          f"{plan.input.data_type} {list(plan.input.dims)}, output {plan.output.name} {plan.output.data_type} "
          f"{list(plan.output.dims)}, {batching}, {plan.instances} x {plan.kind}")
    if result.ensemble:
        plain(f"[green]wrote[/] {', '.join(str(path) for path in result.ensemble)}: encoded pictures (BYTES) in, "
              f"decoded on the Python backend, then {plan.name}")
    plain(f"serve it: tritonserver --model-repository={result.path.parent}")


class TuneLines:
    """``tune``'s progress on stderr: a line per candidate started, its figures when done, each finalist held."""

    def __init__(self, hold_s: float) -> None:
        self.hold_s = hold_s

    def start(self, candidate: Candidate, index: int, count: int) -> None:
        """A candidate started."""
        err_console.print(f"[dim][{index}/{count}][/] {candidate.label}...", highlight=False)

    def verify(self, candidate: Candidate) -> None:
        """A finalist held at its rate."""
        err_console.print(f"[dim]finalist:[/] {candidate.label}, held at {candidate.sustained_per_s:.1f}/s for "
                          f"{self.hold_s:g} s...", highlight=False)

    def done(self, candidate: Candidate) -> None:
        """A candidate's (or a finalist's) figures."""
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
