"""How closely two sets of logits agree: the figures every accuracy gate here is made of."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Agreement:
    """Figures of ``output`` logits against ``reference`` logits over N images."""

    images: int
    max_abs: float
    mean_abs: float
    cosine_mean: float
    cosine_min: float
    sqnr_db: float
    """Signal-to-quantization-noise ratio: 10 log10(sum ref^2 / sum (ref - out)^2) over all logits."""
    top1_agreement: float
    top5_overlap: float

    def to_dict(self) -> dict[str, float]:
        """A JSON-ready form with rounded figures."""
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def agreement(reference: np.ndarray, output: np.ndarray) -> Agreement:
    """Compare two (N, classes) logit arrays, row by row."""
    if reference.shape != output.shape or reference.ndim != 2:
        raise ValueError(f"logits must be two equal (N, classes) arrays, got {reference.shape} and {output.shape}")
    ref, out = reference.astype(np.float64), output.astype(np.float64)
    diff = ref - out
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(out, axis=1)
    cosine = np.where(norms > 0, (ref * out).sum(axis=1) / np.maximum(norms, 1e-300), 1.0)
    noise = float((diff**2).sum())
    sqnr = float("inf") if noise == 0 else 10 * np.log10(float((ref**2).sum()) / noise)
    k = min(5, ref.shape[1])
    top_ref = np.argsort(-ref, axis=1, kind="stable")[:, :k]
    top_out = np.argsort(-out, axis=1, kind="stable")[:, :k]
    overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(top_ref, top_out, strict=True)])
    return Agreement(
        images=int(ref.shape[0]),
        max_abs=float(np.abs(diff).max()),
        mean_abs=float(np.abs(diff).mean()),
        cosine_mean=float(cosine.mean()),
        cosine_min=float(cosine.min()),
        sqnr_db=sqnr,
        top1_agreement=float(np.mean(top_ref[:, 0] == top_out[:, 0])),
        top5_overlap=float(overlap),
    )
