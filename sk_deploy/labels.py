"""ImageNet-1k class names, shipped with the package (index order: the standard sorted-wnid order)."""

from __future__ import annotations

from functools import cache
from importlib import resources


@cache
def imagenet_synsets() -> tuple[tuple[str, str], ...]:
    """(wnid, full name with synonyms) for each of the 1000 classes, in index order."""
    text = resources.files("sk_deploy.data").joinpath("imagenet_synsets.txt").read_text(encoding="utf-8")
    rows = tuple(tuple(line.split(" ", 1)) for line in text.splitlines() if line.strip())
    if len(rows) != 1000:
        raise RuntimeError(f"imagenet_synsets.txt has {len(rows)} classes, expected 1000")
    return rows  # type: ignore[return-value]


def imagenet_labels() -> list[str]:
    """Short human label of each class: the first synonym ("tench", "goldfish", ...)."""
    return [name.split(",")[0].strip() for _, name in imagenet_synsets()]
