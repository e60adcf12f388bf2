"""Serving settings in a TOML file: what ``sk-deploy tune`` chose, taken by ``sk-deploy serve --config FILE``
and ``sk-deploy triton-repo --config FILE`` (options given on their command line win over the file).

The file has one table, ``[serving]``, with ``max_batch`` (the largest batch formed; Triton's
``max_batch_size``), ``max_delay_ms`` (the longest wait for a batch to fill; Triton's
``max_queue_delay_microseconds``) and ``instances`` (serve's inference threads; Triton's ``instance_group``
count); any may be left out. A ``[tuned]`` table, when present, records what the choice was measured with and
is not read back.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from sk_deploy.bundle import atomic_write_bytes
from sk_deploy.errors import SkDeployError

TABLE = "serving"
#: each key, its type, and the smallest value it takes
KEYS: dict[str, tuple[type, float]] = {"max_batch": (int, 1), "max_delay_ms": (float, 0), "instances": (int, 1)}


class SettingsError(SkDeployError, ValueError):
    """A settings file that cannot be read; the message is meant for a person."""


def read_settings(path: str | Path) -> dict[str, Any]:
    """The ``[serving]`` settings of ``path`` that it gives (a SettingsError for a missing or malformed file, an
    unknown key or a value out of range)."""
    path = Path(path)
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise SettingsError(f"{path}: not TOML ({exc})") from None
    table = document.get(TABLE)
    if not isinstance(table, dict):
        raise SettingsError(f"{path}: no [{TABLE}] table (max_batch, max_delay_ms, instances)")
    unknown = sorted(set(table) - set(KEYS))
    if unknown:
        raise SettingsError(f"{path}: unknown key(s) in [{TABLE}]: {', '.join(unknown)}; known: {', '.join(KEYS)}")
    settings: dict[str, Any] = {}
    for key, value in table.items():
        kind, least = KEYS[key]
        wrong_type = not isinstance(value, int if kind is int else int | float)
        if isinstance(value, bool) or wrong_type:
            raise SettingsError(f"{path}: [{TABLE}] {key} must be {'an integer' if kind is int else 'a number'}, "
                                f"got {value!r}")
        if value < least:
            raise SettingsError(f"{path}: [{TABLE}] {key} must be at least {least:g}, got {value!r}")
        settings[key] = kind(value)
    return settings


def _value(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value) if isinstance(value, float) else str(value)


def settings_toml(settings: dict[str, Any], tuned: dict[str, Any] | None = None, comment: str = "") -> str:
    """The file's text: ``[serving]`` with ``settings`` and, when given, ``[tuned]`` with scalar figures."""
    lines = [f"# {line}" for line in comment.splitlines()] + [f"[{TABLE}]"]
    lines += [f"{key} = {_value(settings[key])}" for key in KEYS if key in settings]
    if tuned:
        lines += ["", "[tuned]"] + [f"{key} = {_value(value)}" for key, value in tuned.items() if value is not None]
    return "\n".join(lines) + "\n"


def write_settings(path: str | Path, settings: dict[str, Any], tuned: dict[str, Any] | None = None,
                   comment: str = "") -> Path:
    """Write the settings file (atomically); its path."""
    path = Path(path)
    if path.parent != Path():
        path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, settings_toml(settings, tuned, comment).encode("utf-8"))
    return path
