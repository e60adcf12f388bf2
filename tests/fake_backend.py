"""A backend that is not sk-deploy's, added to the backend table by one entry: ONNX Runtime's CPU provider under
another name. ``python -m tests.fake_backend ARGS`` is the sk-deploy command line with that entry in the table
(for what is read when a command starts: ``--help`` texts, a ``serve`` in its own process)."""

from __future__ import annotations

from sk_deploy.backends import BACKENDS, BackendSpec
from sk_deploy.runtime.ort_backend import OrtBackend

#: the one entry: first in ``auto``'s order, several instances in parallel, measured by ``bench``, run by
#: ``evaluate`` (the table's defaults)
FAKE = BackendSpec("ort-fake", f"{__name__}:OrtFakeBackend", "onnx", "cpu", "ort",
                   "ONNX Runtime's CPU provider under another name", provider="CPUExecutionProvider", auto=-1)


class OrtFakeBackend(OrtBackend):
    """ONNX Runtime on the CPU, named ``ort-fake``: a real runnable backend the table does not ship."""

    name = FAKE.name


def register() -> None:
    """Add FAKE to the table (this process only)."""
    BACKENDS[FAKE.name] = FAKE


if __name__ == "__main__":
    register()
    from sk_deploy.cli import main

    main()
