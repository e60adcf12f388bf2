"""The option reference under docs/reference/ is what the settings models give: a page per command, every option
with its default, range and help; this fails when a model changed and the pages were not regenerated."""

from __future__ import annotations

from pathlib import Path

from sk_deploy.cli.options import COMMANDS
from sk_deploy.cli.reference import FOLDER, REGENERATE, pages, stale
from sk_deploy.settings.base import cli_of, option_name

ROOT = Path(__file__).resolve().parents[1]


def test_the_committed_reference_is_current() -> None:
    wrong = stale(ROOT)
    assert not wrong, f"stale reference pages {wrong}: run `{REGENERATE}` and commit docs/reference/"


def test_every_command_and_option_has_its_line() -> None:
    made = pages()
    assert set(made) == {FOLDER / f"{name}.md" for name in COMMANDS} | {FOLDER / "README.md"}
    serve = made[FOLDER / "serve.md"]
    assert "| `--max-delay-ms` | number | `2` | >= 0 | Longest wait for a batch to fill" in serve
    assert "`serving.max_delay_ms`" in serve and "`openvino`" in serve  # the --config key; backends from the table
    assert "| `--opset` | integer | `18` | 17 to 23 | ONNX opset. | `export.opset` |" in made[FOLDER / "export.md"]
    for name, (model, _) in COMMANDS.items():
        text = made[FOLDER / f"{name}.md"]
        for field_name, field in model.model_fields.items():
            cli = cli_of(field)
            word = (cli.metavar or field_name.upper()).replace("|", "\\|") if cli.argument else option_name(
                field_name, field)
            assert f"| `{word}`" in text, (name, field_name)


def test_a_stale_page_is_named(tmp_path: Path) -> None:
    for path, text in pages().items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    assert stale(tmp_path) == []
    (tmp_path / FOLDER / "serve.md").write_text("old")
    (tmp_path / FOLDER / "gone.md").write_text("old")
    assert stale(tmp_path) == [str(FOLDER / "gone.md"), str(FOLDER / "serve.md")]
