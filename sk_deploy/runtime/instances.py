"""Model instances: several inference threads taking batches from the service's one queue, on the backends
where one model may run batches concurrently and gains from it (the backend table's ``one_instance`` is None);
each instance gets its share of the cores, as its class's ``share_cores`` says:

- ``ort-cpu``: ``InferenceSession.run`` is thread-safe; the one session is shared and its intra-op threads are
  the cores over the instances (at least one: then each run computes on its caller's thread alone).
- ``openvino``: a compiled model is thread-safe and runs one infer request per stream; each instance thread has
  its own request and ``NUM_STREAMS`` is the instance count, which OpenVINO gives the cores over the streams.

The others run one instance, and the table says why (``instances_refusal``).
"""

from __future__ import annotations

from typing import Any

from sk_deploy.backends import BACKENDS
from sk_deploy.machine import physical_cores, usable_cpus


def instances_refusal(backend: str) -> str | None:
    """Why ``backend`` runs one instance only; None where several may run in parallel."""
    spec = BACKENDS.get(backend)
    if spec is None:
        return f"{backend} is not a backend of the table"
    return spec.one_instance


def instance_options(precision: str, instances: int, cores: int | None = None) -> dict[str, Any]:
    """The Predictor's ``options`` (by backend family) for ``instances`` parallel instances on ``cores`` cores
    (by default the physical ones, or the CPUs this process is confined to where fewer): each parallel backend's
    share of the cores; empty for one instance (the defaults)."""
    if instances <= 1:
        return {}
    if not cores:
        usable = usable_cpus()
        cores = min(physical_cores() or usable, usable)
    options: dict[str, Any] = {}
    for spec in BACKENDS.values():
        if spec.parallel and spec.family not in options:
            options[spec.family] = spec.backend_class().share_cores(spec.default_options(precision), instances, cores)
    return options
