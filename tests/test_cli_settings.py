"""Every command's options are made from its settings model (sk_deploy.settings): each option's name, default,
range, choices and help are its field's; every recipe key and ``--config`` key is a field of the same model; no
option is hidden or kept as an old spelling; times are milliseconds and lists one comma-separated value."""

from __future__ import annotations

import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import typer.main
from typer.core import TyperArgument, TyperOption

import sk_deploy
from sk_deploy.cli import app
from sk_deploy.cli.options import COMMANDS as MODELS
from sk_deploy.recipe.schema import Recipe
from sk_deploy.settings.base import bounds, choices, cli_of, command_line, is_list, option_name, shown
from sk_deploy.settings.serve import ServeSettings, ServingFile

COMMANDS = typer.main.get_command(app).commands  # type: ignore[attr-defined]
NAMES = ["models", "predict", "export", "verify", "inspect", "quantize", "build", "serve", "bench", "bench-http",
         "tune", "triton-repo", "prepare", "run", "evaluate", "optimize", "import"]


def test_every_command_has_its_settings_model() -> None:
    assert list(COMMANDS) == NAMES and list(MODELS) == NAMES
    assert all(name == model.COMMAND for name, (model, _) in MODELS.items())


@pytest.mark.parametrize("name", NAMES)
def test_each_option_is_its_field(name: str) -> None:
    model, summary = MODELS[name]
    command = COMMANDS[name]
    params = {p.name: p for p in command.params if p.name != "help"}
    assert set(params) == set(model.model_fields), name
    assert command.help == summary
    for field_name, field in model.model_fields.items():
        param = params[field_name]
        cli = cli_of(field)
        assert isinstance(param, TyperArgument if cli.argument else TyperOption), field_name
        assert not getattr(param, "hidden", False), field_name
        assert param.help == field.description and field.description, field_name
        assert param.required == field.is_required(), field_name
        if not cli.argument:
            assert param.opts[0] == option_name(field_name, field) and set(param.opts[1:]) == set(cli.flags)
        if not field.is_required() and not cli.argument:
            expected = field.default
            if is_list(field) and not cli.repeat:
                expected = shown(expected) if expected else None
            if cli.repeat:
                expected = None
            assert param.default == expected, field_name
        limits = bounds(field)
        if not is_list(field):
            assert (param.min, param.max) == (limits.get("ge"), limits.get("le")), field_name
        listed = choices(field)
        if listed is not None:
            annotation = param.type_descriptor.annotation
            assert typing.get_args(annotation) == listed or typing.get_args(annotation)[0] == listed, field_name


def _sections() -> dict[str, type]:
    found = {}
    for name, field in Recipe.model_fields.items():
        annotation = field.annotation
        if typing.get_origin(annotation) is dict:
            annotation, name = typing.get_args(annotation)[1], f"{name}.NAME"
        if getattr(annotation, "SOURCE", None) is not None:
            found[name] = annotation
    return found


def test_every_recipe_key_is_a_field_of_a_stage_model() -> None:
    sections = _sections()
    assert set(sections) == {"export", "calibration", "precisions.NAME", "build", "evaluate", "bench"}
    for name, section in [*sections.items(), ("serving", ServingFile)]:
        source = section.SOURCE
        assert source.COMMAND, name
        for key, field in section.model_fields.items():
            original = source.model_fields[key]  # the key is the option of that name
            assert field.description == original.description, f"{name}.{key}"
            assert bounds(field) == bounds(original), f"{name}.{key}"
            assert choices(field) == choices(original), f"{name}.{key}"
            if not (name == "evaluate" and key == "images"):  # required by evaluate; a recipe falls back on calibration
                assert field.default == original.default, f"{name}.{key}"
    assert ServingFile.SOURCE is ServeSettings


def test_no_option_is_hidden_or_an_old_spelling() -> None:
    root = Path(sk_deploy.__file__).parent
    hidden, old = "hidden=" + "True", "deprec" + "at"  # spelled apart: `git grep` finds neither in this file
    for path in root.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        assert hidden not in text and old not in text.lower(), path


def test_precision_is_auto_fp32_or_required_everywhere() -> None:
    """What serves (serve, predict, tune's candidates) takes auto, the fastest precision proven accurate here; what
    writes a file for one precision (quantize, build, triton-repo, prepare) takes fp32 or needs it named."""
    seen = {name: ("required" if model.model_fields["precision"].is_required() else
                   model.model_fields["precision"].default)
            for name, (model, _) in MODELS.items() if "precision" in model.model_fields}
    assert set(seen) >= {"predict", "quantize", "build", "serve", "triton-repo", "prepare", "tune"}
    assert {seen["serve"], seen["predict"], seen["tune"]} == {"auto"}, seen
    assert {v for k, v in seen.items() if k not in ("serve", "predict", "tune")} <= {"fp32", "required"}, seen


def test_one_time_unit_and_one_list_style() -> None:
    times = 0
    for model, _ in MODELS.values():
        for name, field in model.model_fields.items():
            if re.search(r"delay|timeout|duration|warmup|drain|budget", name):
                times += 1
                assert name.endswith("_ms"), (model.COMMAND, name)
            if is_list(field) and not cli_of(field).argument and not cli_of(field).repeat:
                assert "comma-separated" in (field.description or "").lower(), (model.COMMAND, name)
    assert times >= 8


def test_the_triton_instance_kind_and_the_torch_device_have_distinct_names() -> None:
    assert "instance_kind" in MODELS["triton-repo"][0].model_fields
    assert "device" not in MODELS["triton-repo"][0].model_fields and "device" in MODELS["predict"][0].model_fields


def test_the_reproducing_command_line_is_made_from_the_model() -> None:
    bench = MODELS["bench"][0].model_validate({"bundle": "b", "backends": "ort-cpu,openvino", "warmup_ms": 0,
                                                "plots": False})
    assert command_line(bench, always=("duration_ms",)) == ("sk-deploy bench b --backends ort-cpu,openvino "
                                                            "--warmup-ms 0 --duration-ms 3000 --no-plots")
    load = MODELS["bench-http"][0].model_validate({"url": "http://127.0.0.1:1", "request_rate": "5,10"})
    assert command_line(load) == "sk-deploy bench-http http://127.0.0.1:1 --request-rate 5,10"


@pytest.mark.parametrize(("args", "message"), [
    (["bench", "B", "--batch-sizes", "0,8"], "error: --batch-sizes: Input should be greater than or equal to 1"),
    (["bench", "B", "--batch-sizes", "one"], "error: --batch-sizes: expected comma-separated int values, got 'one'"),
    (["evaluate", "B", "--images", "I", "--backends", "ort-cpu,onnx"], "error: --backends: 'onnx' is not one of "),
    (["serve", "B", "--port", "70000"], "error: Invalid value for '--port'"),
    (["triton-repo", "B", "--out", "R", "--backend", "triton"], "error: Invalid value for '--backend'"),
    (["export", "skresnet18", "--out", "B", "--opset", "11"], "error: Invalid value for '--opset'"),
    (["export", "skresnet18", "--out", "B", "--exporter", "jit"], "error: Invalid value for '--exporter'"),
    (["quantize", "B", "--precision", "int8", "--method", "median"], "error: Invalid value for '--method'"),
    (["bench-http", "http://127.0.0.1:9", "--request-rate", "10", "--arrivals", "bursty"],
     "error: Invalid value for '--arrivals'"),
    (["triton-repo", "B", "--out", "R", "--instances", "0"], "error: Invalid value for '--instances'"),
])
def test_a_value_the_model_refuses_is_a_one_line_usage_error(args: list[str], message: str) -> None:
    done = subprocess.run([sys.executable, "-m", "sk_deploy", *args], capture_output=True, text=True, timeout=120)
    [line] = done.stderr.strip().splitlines()
    assert done.returncode == 2 and line.startswith(message) and line.endswith("--help)"), done.stderr
