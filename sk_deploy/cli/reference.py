"""The option reference, generated from the settings models: ``docs/reference/<command>.md`` for every command
(each option with its type, default, range or choices, help, and its recipe or ``--config`` key) and
``docs/reference/README.md`` indexing them.

``python -m sk_deploy.cli.reference --write`` writes the pages; ``--check`` exits 1, naming the stale pages, when
the committed ones differ from what the models give (tests/test_reference.py runs it).
"""

from __future__ import annotations

import sys
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from sk_deploy.cli.options import COMMANDS, valid_values
from sk_deploy.settings.base import Settings, base_type, bounds, choices, cli_of, is_list, option_name, shown

#: where the pages go, from the repository root
FOLDER = Path("docs") / "reference"
REGENERATE = "python -m sk_deploy.cli.reference --write"
HEADER = f"<!-- generated from sk_deploy/settings by `{REGENERATE}`: do not edit -->"
TYPES = {int: "integer", float: "number", str: "text", Path: "path", bool: "flag"}


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def kind(field: FieldInfo) -> str:
    """A field's type in words: ``integer``, ``list of integers``, ``two integers``, ``path or auto``."""
    annotation = base_type(field.annotation)
    if is_list(field):
        item = base_type(typing.get_args(annotation)[0])
        if cli_of(field).repeat:
            return f"{TYPES.get(item, 'text')}, repeatable"
        return f"list of {TYPES.get(item, 'text')}s" + ("" if cli_of(field).argument else ", comma-separated")
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return "choice"
    if origin is tuple:
        items = [TYPES.get(base_type(a), "text") for a in typing.get_args(annotation)]
        return f"{len(items)} {items[0]}s" if len(set(items)) == 1 else ", ".join(items)
    if origin is not None:  # a union: each of its types
        return " or ".join(
            "`" + "`, `".join(typing.get_args(a)) + "`" if typing.get_origin(a) is typing.Literal
            else TYPES.get(a, "text") for a in typing.get_args(annotation) if a is not type(None))
    return TYPES.get(annotation, "text")


def default(name: str, field: FieldInfo) -> str:
    """A field's default as the command line writes it."""
    if field.is_required():
        return "required"
    value = field.default
    if isinstance(value, bool):
        option = option_name(name, field)
        return f"`{option}`" if value else ("off" if cli_of(field).name else f"`--no-{option.removeprefix('--')}`")
    if value is None or value == ():
        return "none"
    return f"`{shown(value)}`"


def limits(field: FieldInfo) -> str:
    """A field's range or its choices."""
    listed = choices(field) or valid_values(field)
    if listed is not None:
        return ", ".join(f"`{c}`" for c in listed)
    found = bounds(field)
    low = f">= {shown(found['ge'])}" if "ge" in found else f"> {shown(found['gt'])}" if "gt" in found else ""
    high = f"<= {shown(found['le'])}" if "le" in found else f"< {shown(found['lt'])}" if "lt" in found else ""
    if "ge" in found and "le" in found:
        return f"{shown(found['ge'])} to {shown(found['le'])}"
    return ", ".join(part for part in (low, high) if part)


def recipe_keys() -> dict[tuple[type[BaseModel], str], str]:
    """Each stage field a recipe section takes: (model, field) -> ``section.key``."""
    from sk_deploy.recipe.schema import Recipe

    keys: dict[tuple[type[BaseModel], str], str] = {}
    for section_name, section_field in Recipe.model_fields.items():
        annotation = section_field.annotation
        prefix = section_name
        if typing.get_origin(annotation) is dict:  # precisions: NAME -> a section
            annotation, prefix = typing.get_args(annotation)[1], f"{section_name}.NAME"
        source = getattr(annotation, "SOURCE", None)
        for key in getattr(annotation, "model_fields", {}) if source is not None else ():
            keys[(source, key)] = f"{prefix}.{key}"
    return keys


def config_keys() -> dict[tuple[type[BaseModel], str], str]:
    """Each field a ``--config`` file's ``[serving]`` table sets: (model, field) -> ``serving.key``."""
    from sk_deploy.settings.deploy import TritonSettings
    from sk_deploy.settings.serve import ServingFile

    keys = {(ServingFile.SOURCE, key): f"serving.{key}" for key in ServingFile.model_fields}
    triton = {"max_batch": "max_batch", "max_delay_ms": "max_queue_delay_ms", "instances": "instances"}
    keys.update({(TritonSettings, field): f"serving.{key}" for key, field in triton.items()})
    return keys  # type: ignore[return-value]


def page(name: str, model: type[Settings], summary: str, files: dict[tuple[type[BaseModel], str], str]) -> str:
    """The reference page of command ``name``."""
    fields = model.model_fields
    arguments = [(n, f) for n, f in fields.items() if cli_of(f).argument]
    options = [(n, f) for n, f in fields.items() if not cli_of(f).argument]
    usage = " ".join(["sk-deploy", name, *((cli_of(f).metavar or n.upper()) + ("..." if is_list(f) else "")
                                           for n, f in arguments)]) + " [OPTIONS]"
    lines = [HEADER, "", f"# sk-deploy {name}", "", summary.replace("\n", " "), "", "```", usage, "```", ""]
    if arguments:
        lines += ["| argument | type | meaning |", "| --- | --- | --- |"]
        lines += [f"| `{_cell(cli_of(f).metavar or n.upper())}` | {kind(f)} | {_cell(f.description or '')} |"
                  for n, f in arguments]
        lines.append("")
    keyed = any((model, n) in files for n, _ in options)
    lines += ["| option | type | default | range / choices | meaning |" + (" file key |" if keyed else ""),
              "| --- | --- | --- | --- | --- |" + (" --- |" if keyed else "")]
    for n, f in options:
        names = ", ".join(f"`{o}`" for o in (option_name(n, f), *cli_of(f).flags))
        key = f" `{files[(model, n)]}` |" if (model, n) in files else (" |" if keyed else "")
        lines.append(f"| {names} | {kind(f)} | {_cell(default(n, f))} | {_cell(limits(f))} | "
                     f"{_cell(f.description or '')} |{key}")
    lines.append("")
    if keyed:
        lines += ["A file key is the same setting in a recipe (`sk-deploy run`: `[section]` tables, `--set "
                  "section.key=value`) or in a `--config` file's `[serving]` table; on the command line the option "
                  "wins.", ""]
    return "\n".join(lines)


def index(commands: dict[str, tuple[type[Settings], str]]) -> str:
    """docs/reference/README.md: one line per command."""
    lines = [HEADER, "", "# Command reference", "",
             "Every option of every command, with its default, range and help, generated from the settings models "
             "in `sk_deploy/settings/` (a field's name is the option, the recipe key and the `--config` key). "
             f"Regenerate with `{REGENERATE}`; a test fails when these pages are stale.", "",
             "| command | what it does |", "| --- | --- |"]
    lines += [f"| [`{name}`]({name}.md) | {_cell(summary.split('. ')[0].split(':')[0].rstrip('.'))} |"
              for name, (_, summary) in commands.items()]
    return "\n".join([*lines, ""])


def pages() -> dict[Path, str]:
    """Every page, by its path from the repository root."""
    import sk_deploy.cli  # noqa: F401  (registers every command)

    files = {**recipe_keys(), **config_keys()}
    made = {FOLDER / f"{name}.md": page(name, model, summary, files) for name, (model, summary) in COMMANDS.items()}
    made[FOLDER / "README.md"] = index(COMMANDS)
    return made


def stale(root: Path) -> list[str]:
    """The pages under ``root`` that differ from the models' (missing, changed, or no longer made)."""
    made = pages()
    found = {p.relative_to(root) for p in (root / FOLDER).glob("*.md")} if (root / FOLDER).is_dir() else set()
    wrong = [str(p) for p, text in made.items() if not (root / p).is_file() or (root / p).read_text() != text]
    return sorted(wrong + [str(p) for p in found - set(made)])


def main(argv: list[str]) -> int:
    """``--write`` the pages or ``--check`` them, from the repository root (default: the current directory)."""
    root = Path(argv[1]) if len(argv) > 1 else Path()
    if argv[:1] == ["--write"]:
        (root / FOLDER).mkdir(parents=True, exist_ok=True)
        for path in (root / FOLDER).glob("*.md"):
            path.unlink()
        for path, text in pages().items():
            (root / path).write_text(text, encoding="utf-8")
        print(f"wrote {len(pages())} pages to {root / FOLDER}")
        return 0
    if argv[:1] == ["--check"]:
        wrong = stale(root)
        if wrong:
            print(f"stale reference pages: {', '.join(wrong)}; run: {REGENERATE}", file=sys.stderr)
        return 1 if wrong else 0
    print("usage: python -m sk_deploy.cli.reference --write|--check [ROOT]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

