"""Model instances: several inference threads taking batches from the service's one queue, on the backends
where one model may run batches concurrently and gains from it; each instance gets its share of the cores.

- ``ort-cpu``: ``InferenceSession.run`` is thread-safe; the one session is shared and its intra-op threads are
  the cores over the instances (at least one: then each run computes on its caller's thread alone).
- ``openvino``: a compiled model is thread-safe and runs one infer request per stream; each instance thread has
  its own request and ``NUM_STREAMS`` is the instance count, which OpenVINO gives the cores over the streams.

The others run one instance, and say why (``instances_refusal``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from sk_deploy.machine import physical_cores

#: why a backend runs one instance at a time (a backend not named here and not in PARALLEL: not offered)
ONE_INSTANCE = {
    "torch": "PyTorch's intra-op threads are one process-wide setting (torch.set_num_threads), so parallel "
             "instances would each take every core",
    "tensorrt": "an engine has one execution context and one set of device buffers here: parallel runs would "
                "overwrite each other",
    "ort-cuda": "not offered: one CUDA session's runs share its device stream, and it is untested without a GPU",
    "ort-tensorrt": "not offered: one session's runs share its device stream, and it is untested without a GPU",
}
PARALLEL = ("ort-cpu", "openvino")


def instances_refusal(backend: str) -> str | None:
    """Why ``backend`` runs one instance only; None where several may run in parallel."""
    if backend in PARALLEL:
        return None
    return ONE_INSTANCE.get(backend, f"{backend} runs one instance")


def instance_options(precision: str, instances: int, cores: int | None = None) -> dict[str, Any]:
    """The Predictor's ``options`` (by backend family) for ``instances`` parallel instances on ``cores`` cores
    (the physical ones by default): each instance's share of the cores; empty for one instance (the defaults)."""
    from sk_deploy.runtime.predictor import BACKEND_SPECS

    if instances <= 1:
        return {}
    cores = cores or physical_cores() or 1
    ort = BACKEND_SPECS["ort-cpu"].options(precision, False)
    openvino = BACKEND_SPECS["openvino"].options(precision, False)
    return {"ort": dataclasses.replace(ort, threads=max(1, cores // instances)),
            "openvino": dataclasses.replace(openvino, streams=instances)}
