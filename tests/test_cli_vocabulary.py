"""Every command speaks the one vocabulary (sk_deploy.cli.common.VOCABULARY, the README's Options table): each
option its --help shows is in it, --precision is fp32 or required, times are milliseconds; the old spellings
still work for one release, each with a one-line warning."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer.main
from typer.core import TyperOption
from typer.testing import CliRunner

from sk_deploy.cli import app
from sk_deploy.cli.common import VOCABULARY

COMMANDS = typer.main.get_command(app).commands  # type: ignore[attr-defined]
runner = CliRunner()


def _options(command: Any) -> list[TyperOption]:
    return [p for p in command.params if isinstance(p, TyperOption)]


def _help(name: str) -> str:
    result = runner.invoke(app, [name, "--help"], env={"COLUMNS": "250", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return result.output


def test_every_command_is_covered() -> None:
    assert set(COMMANDS) == {"models", "predict", "export", "verify", "inspect", "quantize", "build", "serve",
                             "bench", "bench-http", "tune", "triton-repo", "prepare", "run", "evaluate", "optimize",
                             "import"}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_uses_the_shared_vocabulary(name: str) -> None:
    shown = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", _help(name))) - {"--help"}
    declared = {o for p in _options(COMMANDS[name]) if not p.hidden for o in p.opts if o.startswith("--")}
    assert declared <= shown, f"{name} --help leaves out {declared - shown}"
    unknown = {o for o in shown if o not in VOCABULARY and o.removeprefix("--no-") not in
               {v.removeprefix("--") for v in VOCABULARY}}
    assert not unknown, f"{name} --help shows options outside the vocabulary: {sorted(unknown)}"


def test_precision_is_fp32_or_required_everywhere() -> None:
    seen = {}
    for name, command in COMMANDS.items():
        for option in _options(command):
            if "--precision" in option.opts:
                seen[name] = "required" if option.required else option.default
    assert set(seen) >= {"predict", "quantize", "build", "serve", "triton-repo", "prepare"}
    assert set(seen.values()) <= {"fp32", "required"}, seen


def test_one_time_unit_and_one_list_style() -> None:
    times = [o for o in VOCABULARY if re.search(r"delay|timeout|duration|warmup|drain", o)]
    assert len(times) >= 6 and all(o.endswith("-ms") for o in times), times
    for name, command in COMMANDS.items():
        for option in _options(command):
            if not option.hidden and option.multiple:  # a list option: one comma-separated value, said in its help
                assert "comma-separated" in (option.help or "").lower(), (name, option.opts)


def test_triton_instance_kind_and_torch_device_have_distinct_names() -> None:
    def visible(name: str) -> set[str]:
        return {o for p in _options(COMMANDS[name]) if not p.hidden for o in p.opts}

    assert "--instance-kind" in visible("triton-repo") and "--device" not in visible("triton-repo")
    assert "--device" in visible("predict") and "--instance-kind" not in visible("predict")


@pytest.mark.parametrize(
    ("args", "old", "new"),
    [
        (["quantize", "MISSING", "--precision", "int8", "--calib", "PHOTOS"], "--calib", "--images"),
        (["triton-repo", "MISSING", "--out", "REPO", "--device", "cpu"], "--device", "--instance-kind"),
        (["triton-repo", "MISSING", "--out", "REPO", "--max-queue-delay-us", "500"], "--max-queue-delay-us",
         "--max-queue-delay-ms"),
        (["bench", "MISSING", "--batch", "1,2"], "--batch", "--batch-sizes"),
        (["bench", "MISSING", "--duration", "0.5"], "--duration", "--duration-ms"),
        (["build", "MISSING", "--batch", "1:2:4"], "--batch", "--batch-profile"),
        (["export", "sknet50", "--out", "MISSING", "--batch", "1:1:1", "--opset", "3"], "--batch",
         "--batch-profile"),
    ],
)
def test_old_spellings_work_with_a_one_line_warning(tmp_path: Path, args: list[str], old: str, new: str) -> None:
    places = {"MISSING": tmp_path / "missing", "PHOTOS": tmp_path, "REPO": tmp_path / "repo"}
    result = runner.invoke(app, [str(places.get(a, a)) for a in args], env={"COLUMNS": "250"})
    warnings = [line for line in result.output.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: {old} is deprecated and will be removed in the next release; use {new}"]
    assert result.exit_code == 1 and "error:" in result.output and "Traceback" not in result.output


def test_repeating_a_list_option_still_works_with_a_warning(tmp_path: Path) -> None:
    result = runner.invoke(app, ["bench", str(tmp_path / "missing"), "--backends", "ort-cpu", "--backends", "torch"],
                           env={"COLUMNS": "250"})
    assert "warning: repeating --backends is deprecated" in result.output
    assert "--backends ort-cpu,torch" in result.output
    assert result.exit_code == 1 and "not a bundle directory" in result.output
