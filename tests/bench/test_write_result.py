"""The one place benchmark scripts write their figures and report."""

from __future__ import annotations

import json
from pathlib import Path

from sk_deploy.bench.report import write_result


def test_write_result_writes_both_files_and_returns_the_markdown(tmp_path: Path) -> None:
    out = tmp_path / "results" / "cpu-2core"
    text = write_result(out, "soak", {"sent": 3, "answered": 3}, "# Soak\n\nsent 3 — answered 3\n")
    assert json.loads((out / "soak.json").read_text()) == {"sent": 3, "answered": 3}
    assert (out / "soak.md").read_text(encoding="utf-8") == text == "# Soak\n\nsent 3 — answered 3\n"
    assert sorted(p.name for p in out.iterdir()) == ["soak.json", "soak.md"]  # no temporary file left behind
