"""ImageNet-1k class names shipped with the package."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from sk_deploy.labels import imagenet_labels, imagenet_synsets
from sk_deploy.runtime.classify import softmax, top_k


def test_labels_in_index_order() -> None:
    labels = imagenet_labels()
    assert len(labels) == 1000
    assert labels[0] == "tench" and labels[1] == "goldfish" and labels[999] == "toilet tissue"
    assert imagenet_synsets()[0][0] == "n01440764"


def test_labels_match_the_shared_synsets(shared_data: Path) -> None:
    rows = (shared_data / "synset_words.txt").read_text().splitlines()
    assert [tuple(r.split(" ", 1)) for r in rows] == list(imagenet_synsets())


def test_top_k_ranks_by_probability() -> None:
    logits = np.array([[0.0, 3.0, 1.0, 2.0], [5.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    ranked = top_k(logits, 2, ["a", "b", "c", "d"])
    assert [(p.index, p.label) for p in ranked[0]] == [(1, "b"), (3, "d")]
    assert ranked[1][0].index == 0
    np.testing.assert_allclose(softmax(logits).sum(axis=1), 1.0)
    assert ranked[0][0].probability == softmax(logits)[0, 1]
    assert len(top_k(logits, 99, ["a", "b", "c", "d"])[0]) == 4
