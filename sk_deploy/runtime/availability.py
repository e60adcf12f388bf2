"""What this machine can run: the names ``sk_deploy.machine`` defines, under the path runtime/ code has
always imported them from (``Machine``, ``probe_machine``, ``BackendUnavailable``, the install messages)."""

from sk_deploy.machine import (
    OPENVINO_INSTALL,
    ORT_GPU_INSTALL,
    TENSORRT_INSTALL,
    BackendUnavailable,
    Machine,
    import_openvino,
    import_tensorrt,
    openvino_version,
    probe_machine,
    require_cuda,
    require_ort_provider,
    tensorrt_version,
)

__all__ = ["OPENVINO_INSTALL", "ORT_GPU_INSTALL", "TENSORRT_INSTALL", "BackendUnavailable", "Machine",
           "import_openvino", "import_tensorrt", "openvino_version", "probe_machine", "require_cuda",
           "require_ort_provider", "tensorrt_version"]
