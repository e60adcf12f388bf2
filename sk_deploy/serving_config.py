"""Serving settings in a TOML file: what ``sk-deploy tune`` chose, taken by ``sk-deploy serve --config FILE``
and ``sk-deploy triton-repo --config FILE`` (options given on their command line win over the file).

The file has one table, ``[serving]``: the fields of ``settings.serve.ServingFile``, which are serve's own
``max_batch``, ``max_delay_ms`` and ``instances`` (Triton's ``max_batch_size``, ``max_queue_delay_microseconds``
and ``instance_group`` count); any may be left out. A ``[tuned]`` table, when present, records what the choice
was measured with and is not read back.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sk_deploy.bundle import atomic_write_bytes
from sk_deploy.errors import SkDeployError
from sk_deploy.settings.serve import ServingFile

TABLE = "serving"


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
    keys = ", ".join(ServingFile.model_fields)
    if not isinstance(table, dict):
        raise SettingsError(f"{path}: no [{TABLE}] table ({keys})")
    unknown = sorted(set(table) - set(ServingFile.model_fields))
    if unknown:
        raise SettingsError(f"{path}: unknown key(s) in [{TABLE}]: {', '.join(unknown)}; known: {keys}")
    try:
        settings = ServingFile.model_validate(table, strict=True)
    except ValidationError as exc:
        error = exc.errors()[0]
        raise SettingsError(f"{path}: [{TABLE}] {error['loc'][0]}: {error['msg']}, got {error['input']!r}") from None
    return settings.model_dump(include=settings.model_fields_set)


def _value(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(value) if isinstance(value, float) else str(value)


def settings_toml(settings: dict[str, Any], tuned: dict[str, Any] | None = None, comment: str = "") -> str:
    """The file's text: ``[serving]`` with ``settings`` and, when given, ``[tuned]`` with scalar figures."""
    lines = [f"# {line}" for line in comment.splitlines()] + [f"[{TABLE}]"]
    lines += [f"{key} = {_value(value)}" for key, value in ServingFile(**settings).model_dump().items()
              if key in settings]
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
