"""The one base of every error whose message is meant for a person.

A stage raises a subclass of ``SkDeployError`` (each keeps the built-in base it had, ValueError, RuntimeError
or KeyError, for callers that catch those); the command line catches this one type, prints the message as one
line and exits non-zero.
"""

from __future__ import annotations


class SkDeployError(Exception):
    """An error for a person: a bad path, a missing file or package, a refused option; the message says what to do."""
