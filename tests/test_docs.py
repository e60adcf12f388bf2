"""The README is a quickstart and the docs match the code: the README is at most 300 lines, names every command,
and carries the test command CI runs; every relative link in the README and docs/*.md leads to a file (and
heading) that exists; docs/layout.md names every module under sk_deploy/ and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer.main

from sk_deploy.cli import app

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference"
LAYOUT = DOCS / "layout.md"
PAGES = [README, *sorted(DOCS.glob("*.md"))]

FENCE = re.compile(r"^```.*?^```", re.S | re.M)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
LAYOUT_PATH = re.compile(r"`(sk_deploy/[\w/.]*?(?:\.py|/))`")


def _prose(path: Path) -> str:
    """The page without its fenced code blocks (a link is never inside one)."""
    return FENCE.sub("", path.read_text(encoding="utf-8"))


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    return {_slug(m) for m in re.findall(r"^#{1,6}\s+(.+)$", _prose(path), re.M)}


def test_readme_is_at_most_300_lines() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 300, f"README.md has {len(lines)} lines; the reference belongs under docs/"


def test_readme_names_every_command() -> None:
    commands = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]
    assert len(commands) >= 17
    text = README.read_text(encoding="utf-8")
    missing = [name for name in commands if not re.search(rf"`sk-deploy {re.escape(name)}(?![\w-])", text)]
    assert not missing, f"README.md does not name {missing} as `sk-deploy NAME`"


def test_readme_test_command_is_what_ci_runs() -> None:
    ci = [line for line in (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
          if line.strip() and not line.startswith("#") and not line.startswith(("set ", "cd "))]
    assert len(ci) == 1, f".ci/run should run one command, runs {ci}"
    for page in (README, DOCS / "tests.md"):
        blocks = re.findall(r"^```bash\n(.*?)^```", page.read_text(encoding="utf-8"), re.S | re.M)
        commands = [block.strip() for block in blocks if "pytest" in block]
        assert commands == [ci[0]], f"{page.name}'s test command {commands} is not what .ci/run runs: {ci[0]!r}"


def _links() -> list[tuple[Path, str]]:
    found = []
    for page in PAGES:
        for target in LINK.findall(_prose(page)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("#"):
                continue
            found.append((page, target))
    return found


@pytest.mark.parametrize(("page", "target"), _links(), ids=lambda v: v.name if isinstance(v, Path) else v)
def test_relative_link_points_to_a_file(page: Path, target: str) -> None:
    path, _, anchor = target.partition("#")
    resolved = (page.parent / path).resolve()
    if resolved.is_relative_to(REFERENCE) and not REFERENCE.is_dir():
        pytest.skip("docs/reference/ is generated from the settings models and not written yet")
    assert resolved.exists(), f"{page.relative_to(ROOT)} links to {target}, which does not exist"
    if anchor and resolved.suffix == ".md":
        assert anchor in _anchors(resolved), f"{page.relative_to(ROOT)} links to {target}: no such heading"


def test_every_page_under_docs_is_linked_from_the_index() -> None:
    index = _prose(DOCS / "README.md")
    unlinked = [p.name for p in DOCS.glob("*.md") if p.name != "README.md" and f"]({p.name})" not in index]
    assert not unlinked, f"docs/README.md does not list {unlinked}"


def _modules() -> set[str]:
    """Every module (a .py file but __init__.py) and every package directory under sk_deploy/, as paths."""
    package = ROOT / "sk_deploy"
    found = set()
    for file in package.rglob("*.py"):
        if "__pycache__" in file.parts:
            continue
        relative = file.relative_to(ROOT)
        if file.name != "__init__.py":
            found.add(relative.as_posix())
        if file.parent != package:
            found.add(file.parent.relative_to(ROOT).as_posix() + "/")
    return found


def test_layout_names_every_module_and_no_other() -> None:
    named = LAYOUT_PATH.findall(LAYOUT.read_text(encoding="utf-8"))
    modules = _modules()
    assert not (missing := sorted(modules - set(named))), f"docs/layout.md leaves out {missing}"
    assert not (stale := sorted(set(named) - modules)), f"docs/layout.md names what does not exist: {stale}"
