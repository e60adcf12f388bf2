"""Every recipe in export/ loads and validates; a bad recipe is refused before any work, in one line naming the
key (and the valid choices where there is a list of them)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from sk_deploy.bundle import GRAPH_FORMS
from sk_deploy.cli import app
from sk_deploy.models.registry import list_models
from sk_deploy.recipe.schema import RecipeError, load_recipe, parse_recipe, target_forms

EXPORT = Path(__file__).resolve().parents[2] / "export"
RECIPES = sorted(EXPORT.glob("*.toml"))


def test_one_recipe_per_model_and_target() -> None:
    assert {p.stem for p in RECIPES} == {f"{m}-{t}" for m in list_models() for t in ("cpu", "gpu")}


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_every_recipe_validates(path: Path, tmp_path: Path) -> None:
    recipe = load_recipe(path, [f"calibration.images={tmp_path}"])
    assert recipe.model.name == path.stem.rsplit("-", 1)[0] and recipe.target == path.stem.rsplit("-", 1)[1]
    wanted = {"cpu": {"fp32", "int8-cpu"}, "gpu": {"fp32", "fp16", "int8"}}[recipe.target]
    assert set(recipe.precisions) >= wanted
    assert recipe.calibration.images == tmp_path


def test_every_key_is_documented() -> None:
    readme = (EXPORT / "README.md").read_text(encoding="utf-8")
    from sk_deploy.recipe.schema import PrecisionSection, Recipe

    for name, field in Recipe.model_fields.items():
        assert f"`{name}`" in readme, name
        for key in getattr(field.annotation, "model_fields", {}):
            assert f"`{name}.{key}`" in readme, f"{name}.{key}"
    for key in PrecisionSection.model_fields:
        assert f"`precisions.NAME.{key}`" in readme, key


def _base(tmp_path: Path) -> dict:
    return {"target": "cpu", "model": {"name": "skresnet18"}, "calibration": {"images": str(tmp_path)},
            "precisions": {"fp32": {}, "int8-cpu": {}}}


@pytest.mark.parametrize(("change", "message"), [
    ({"bogus": 1}, "recipe: bogus: unknown key; valid keys here: target, out, model,"),
    ({"export": {"opset": "eighteen"}}, "recipe: export.opset: Input should be a valid integer"),
    ({"export": {"exporter": "jit"}}, "recipe: export.exporter: Input should be 'dynamo' or 'legacy'"),
    ({"model": {"name": "skresnet18", "weigths": "random"}}, "recipe: model.weigths: unknown key; valid keys here: "
                                                             "name, weights"),
    ({"model": {"name": "resnet50"}}, "recipe: model.name: unknown model 'resnet50'; choose one of: sknet26,"),
    ({"precisions": {"fp32": {}, "int8": {}}}, "recipe: precisions.int8: the cpu target cannot take 'int8'; choose "
                                               "from: fp32, fp16, int8-cpu"),
    ({"calibration": {"calib_size": 8}}, "recipe: calibration.images: int8-cpu needs calibration photos"),
    ({"bench": {"batch_sizes": [0]}}, "recipe: bench.batch_sizes.0: Input should be greater than or equal to 1"),
    ({"bench": {"batch_sizes": []}}, "recipe: bench.batch_sizes: Tuple should have at least 1 item"),
    ({"target": "tpu"}, "recipe: target: Input should be 'cpu' or 'gpu'"),
])
def test_bad_recipes_are_refused_naming_the_key(tmp_path: Path, change: dict, message: str) -> None:
    with pytest.raises(RecipeError) as caught:
        parse_recipe({**_base(tmp_path), **change})
    assert str(caught.value).startswith(message), str(caught.value)
    assert "\n" not in str(caught.value)


def test_gpu_target_takes_the_tensorrt_forms_and_new_table_precisions() -> None:
    assert set(target_forms("gpu")) == {f.precision for f in GRAPH_FORMS if f.target != "cpu"}
    assert "int8-cpu" in target_forms("cpu") and "int8" not in target_forms("cpu")


def test_a_precision_added_to_the_table_is_accepted(tmp_path: Path) -> None:
    # bf16 came into the table as a CPU-only form (OpenVINO compiles model.onnx in bf16): the cpu target takes it
    # under its plain name, the gpu target refuses it
    recipe = parse_recipe({**_base(tmp_path), "precisions": {"fp32": {}, "int8-cpu": {}, "bf16": {}}})
    assert recipe.forms()["bf16"] == next(f for f in GRAPH_FORMS if f.precision == "bf16")
    with pytest.raises(RecipeError, match="the gpu target cannot take 'bf16'"):
        parse_recipe({**_base(tmp_path), "target": "gpu", "precisions": {"fp32": {}, "bf16": {}}})


def test_set_overrides_and_is_typed(tmp_path: Path) -> None:
    path = EXPORT / "skresnet18-cpu.toml"
    recipe = load_recipe(path, [f"calibration.images={tmp_path}", "calibration.calib_size=32",
                                "bench.batch_sizes=[1, 4]",
                                "export.fuse_preprocess=true"])
    assert recipe.calibration.calib_size == 32 and recipe.bench.batch_sizes == (1, 4)
    assert recipe.export.fuse_preprocess is True
    with pytest.raises(RecipeError, match=r"^--set 'calibration\.calib_size': expected key=value"):
        load_recipe(path, ["calibration.calib_size"])
    with pytest.raises(RecipeError, match=r"calibration\.calib_size: Input should be a valid integer"):
        load_recipe(path, [f"calibration.images={tmp_path}", "calibration.calib_size=many"])


def test_set_pairs_split_on_commas_before_a_key() -> None:
    from sk_deploy.recipe.schema import split_sets

    assert split_sets("calibration.calib_size=6,bench.batch_sizes=[1, 8],out=a,b") == [
        "calibration.calib_size=6", "bench.batch_sizes=[1, 8]", "out=a,b"]


def test_cli_refuses_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    result = CliRunner().invoke(app, ["run", str(EXPORT / "skresnet18-cpu.toml"), "--out", str(out)])
    assert result.exit_code == 1
    assert "calibration.images: int8-cpu needs calibration photos" in result.output
    assert not out.exists()
