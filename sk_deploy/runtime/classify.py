"""From logits to what a person reads: softmax, top-k, labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Prediction:
    """One ranked class of one image."""

    index: int
    label: str
    probability: float


def softmax(logits: np.ndarray) -> np.ndarray:
    """Numerically stable softmax over the last axis, in float64."""
    shifted = logits.astype(np.float64) - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def top_k(logits: np.ndarray, k: int, labels: list[str]) -> list[list[Prediction]]:
    """The ``k`` most probable classes of each row of ``logits`` (N, classes), best first."""
    if logits.ndim != 2:
        raise ValueError(f"logits must be (N, classes), got shape {logits.shape}")
    k = max(1, min(k, logits.shape[1]))
    probs = softmax(logits)
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [
        [Prediction(int(i), labels[i] if i < len(labels) else str(i), float(row[i])) for i in idx]
        for row, idx in zip(probs, order, strict=True)
    ]
