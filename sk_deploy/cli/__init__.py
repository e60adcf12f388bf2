"""The ``sk-deploy`` command line: one module per command group, each command a thin call into one module of
the package, and ``render`` for what they print.

``models``/``predict`` (models.py), ``export``/``verify``/``inspect`` (graph.py), ``quantize``/``build``
(precision.py), ``serve`` (serve.py), ``bench``/``bench-http`` (bench.py), ``tune`` (tune.py),
``triton-repo``/``prepare`` (deploy.py), ``run``/``evaluate``/``optimize``/``import`` (recipe.py). Each command's
options are made from its settings model (``sk_deploy.settings``) by ``options.command``; ``reference`` writes
docs/reference/ from the same models. Every error meant for a person is an ``SkDeployError``: one line, exit 1;
a value the options refuse is a usage error: one line, exit 2.
"""

from __future__ import annotations

from sk_deploy.cli.common import app

# Each module registers its commands on ``app``; imported in the order of the flow, which --help lists them in.
# isort: off
from sk_deploy.cli import models, graph, precision, serve, bench, tune, deploy, recipe  # noqa: F401
# isort: on

__all__ = ["app", "main"]


def main() -> None:
    """Entry point for ``python -m sk_deploy``."""
    app()
