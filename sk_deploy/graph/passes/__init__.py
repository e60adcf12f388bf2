"""Graph rewrites, one per module: ``cleanup``, ``sk_select``, ``preprocess``; ``optimize`` runs them in order."""

from __future__ import annotations

from typing import Any

import onnx

from sk_deploy.graph.passes import cleanup, preprocess, sk_select
from sk_deploy.images import Preprocess


def optimize(
    raw: onnx.ModelProto, fuse_preprocess: Preprocess | None = None
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The exporter's graph -> the deployable one: cleanup, SK Select rewrite, cleanup again, and (when given)
    the preprocessing fused in. Returns the model and each pass's report (JSON-ready), keyed by pass name.
    """
    reports: dict[str, Any] = {}
    model, first = cleanup.run(raw)
    reports["cleanup"] = first.to_dict()
    model, select = sk_select.run(model)
    reports["sk_select"] = select.to_dict()
    model, second = cleanup.run(model, slim=False)
    reports["cleanup_after"] = second.to_dict()
    if fuse_preprocess is not None:
        model, fused = preprocess.run(model, fuse_preprocess)
        model = cleanup.infer_and_check(model)
        reports["preprocess"] = fused.to_dict()
    return model, reports


__all__ = ["cleanup", "optimize", "preprocess", "sk_select"]
