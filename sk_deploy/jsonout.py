"""Strict JSON out (RFC 8259): every figure the package writes or prints goes through ``dumps``.

Python's ``json`` writes ``NaN`` and ``Infinity`` by default, which no strict parser reads (``jq``, JavaScript's
``JSON.parse``, Go, serde). A figure that is not a finite number (the SQNR of two identical outputs, a latency
that was never measured) is written as ``null``, and ``allow_nan=False`` makes any other slip an error here
rather than a broken file elsewhere.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any


def finite(value: Any, default: Callable[[Any], Any] | None = None) -> Any:
    """``value`` with every non-finite float (NaN, +-Infinity, numpy's too) replaced by None, in dicts, lists and
    tuples at any depth; another object goes through ``default`` first (as ``json.dumps``'s ``default``)."""
    if isinstance(value, bool) or value is None or isinstance(value, (str, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: finite(item, default) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item, default) for item in value]
    if hasattr(value, "dtype") and hasattr(value, "item") and getattr(value, "ndim", None) == 0:
        return finite(value.item(), default)  # numpy scalars
    if default is None:
        raise TypeError(f"{type(value).__name__} is not JSON serializable")
    return finite(default(value), default)


def dumps(value: Any, default: Callable[[Any], Any] | None = None, **options: Any) -> str:
    """``json.dumps`` of ``finite(value)`` with ``allow_nan=False``: strict JSON, non-finite figures as null."""
    return json.dumps(finite(value, default), allow_nan=False, **options)
