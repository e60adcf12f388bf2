"""The benchmark scripts still run against today's package, and benchmarks/README.md is what its generator writes
from the committed results. A benchmark is run by hand, rarely, often on a machine lent for an hour: a script that
died on a renamed import, or a README quoting a superseded figure, went unnoticed until then."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
SCRIPTS = sorted(BENCHMARKS.glob("*/*.py"))
WITH_OPTIONS = [path for path in SCRIPTS if "argparse" in path.read_text(encoding="utf-8")]


def _name(path: Path) -> str:
    return str(path.relative_to(BENCHMARKS))


@pytest.fixture
def run_script(monkeypatch: pytest.MonkeyPatch):
    """Run a script as ``python SCRIPT ARGS`` would, in this process (``as_main=False``: load it without running its
    main); its names. sys.argv and sys.path are restored after (each script puts the repository first on it)."""
    monkeypatch.setattr(sys, "path", list(sys.path))

    def run(path: Path, *args: str, as_main: bool = True) -> dict:
        monkeypatch.setattr(sys, "argv", [str(path), *args])
        return runpy.run_path(str(path), run_name="__main__" if as_main else f"bench_{path.parent.name}")

    return run


def test_the_scripts_are_found() -> None:
    assert len(SCRIPTS) >= 10 and BENCHMARKS / "default_path" / "run.py" in WITH_OPTIONS


@pytest.mark.parametrize("path", WITH_OPTIONS, ids=_name)
def test_a_script_with_options_loads_and_prints_its_help(path: Path, run_script, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        run_script(path, "--help")
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("usage:")


@pytest.mark.parametrize("path", sorted(set(SCRIPTS) - set(WITH_OPTIONS)), ids=_name)
def test_a_script_without_options_loads(path: Path, run_script) -> None:
    names = run_script(path, as_main=False)  # its imports resolve; nothing is measured or written
    assert any(callable(value) and getattr(value, "__module__", None) == names["__name__"]
               for value in names.values())


def test_the_benchmarks_readme_is_generated_from_the_committed_results(run_script) -> None:
    render = run_script(BENCHMARKS / "suite" / "readme.py", as_main=False)["render"]
    assert render(BENCHMARKS / "results") == (BENCHMARKS / "README.md").read_text(encoding="utf-8"), (
        "benchmarks/README.md is stale: python benchmarks/suite/readme.py")
