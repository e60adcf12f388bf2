"""Graph rewrites, one per module: ``cleanup``, ``sk_select``, ``preprocess``; ``optimize`` runs them in order."""

from __future__ import annotations

from typing import Any

import onnx
import onnx_ir as ir

from sk_deploy.graph.passes import cleanup, preprocess, sk_select
from sk_deploy.images import Preprocess


def optimize(
    raw: onnx.ModelProto, fuse_preprocess: Preprocess | None = None
) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """The exporter's graph -> the deployable one: cleanup, SK Select rewrite, cleanup again, and (when given)
    the preprocessing fused in. Returns the model and each pass's report (JSON-ready), keyed by pass name.

    onnxslim (which reads protos) runs first; then the proto becomes one ``ir.Model`` that every pass rewrites in
    place, and back to a proto once, for ONNX's strict shape inference and checker.
    """
    before = cleanup.histogram(raw)
    model = ir.from_proto(cleanup.run_onnxslim(raw))
    reports: dict[str, Any] = {"cleanup": cleanup.apply(model, before).to_dict()}
    reports["sk_select"] = sk_select.apply(model).to_dict()
    reports["cleanup_after"] = cleanup.apply(model, slimmed=False).to_dict()
    if fuse_preprocess is not None:
        reports["preprocess"] = preprocess.apply(model, fuse_preprocess).to_dict()
    return cleanup.infer_and_check(ir.to_proto(model)), reports


__all__ = ["cleanup", "optimize", "preprocess", "sk_select"]
