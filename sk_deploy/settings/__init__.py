"""The settings of every stage: one pydantic model per command, the only home of each option.

A field's name is the command-line option (``max_delay_ms`` is ``--max-delay-ms``), the recipe key and the
``--config`` key; its ``Field`` holds the default, the range (``ge``/``le``, ``Literal`` choices) and the help text,
once. The command line (``sk_deploy.cli.options``), the recipe's sections (``sk_deploy.recipe.schema``), the
``[serving]`` file (``sk_deploy.serving_config``), the reproducing command line in reports (``command_line``) and
the option reference (``docs/reference/``, written by ``python -m sk_deploy.cli.reference --write``) are all made
from these models. A new option is one field. This package sits below every stage and imports none of them.
"""
