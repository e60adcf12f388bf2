"""Strict JSON out: non-finite figures become null wherever the package writes or prints JSON."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from sk_deploy.bundle import atomic_write_json
from sk_deploy.jsonout import dumps, finite
from sk_deploy.metrics import agreement


def refuse(constant: str) -> None:
    raise ValueError(f"not strict JSON: {constant}")


def test_non_finite_figures_become_null_at_any_depth() -> None:
    value = {"a": float("inf"), "b": [1.5, float("-inf"), (float("nan"), 2)], "c": np.float32("nan"),
             "d": np.float64(0.25), "e": True, "f": None, "g": "Infinity"}
    assert finite(value) == {"a": None, "b": [1.5, None, [None, 2]], "c": None, "d": 0.25, "e": True, "f": None,
                             "g": "Infinity"}
    text = dumps(value)
    assert json.loads(text, parse_constant=refuse)["d"] == 0.25
    assert "NaN" not in text and text.count("Infinity") == 1  # the string value only


def test_objects_go_through_default_and_unknown_ones_are_refused() -> None:
    @dataclass
    class Point:
        x: float

    assert json.loads(dumps({"p": Point(float("inf"))}, default=lambda v: vars(v))) == {"p": {"x": None}}
    with pytest.raises(TypeError, match="Point is not JSON serializable"):
        dumps(Point(1.0))


def test_identical_logits_write_a_null_sqnr(tmp_path: Path) -> None:
    logits = np.arange(12, dtype=np.float32).reshape(2, 6)
    figures = agreement(logits, logits).to_dict()
    assert figures["sqnr_db"] == float("inf")  # the figure itself is exact; only what is written changes
    atomic_write_json(tmp_path / "figures.json", figures)
    text = (tmp_path / "figures.json").read_text()
    assert "Infinity" not in text and json.loads(text, parse_constant=refuse)["sqnr_db"] is None
