"""Errors of the SQL executors that are about configuration, not about one statement."""

from __future__ import annotations

READ_ONLY_ROLE_HELP = (
    "create a least-privilege role with examples/data/readonly_role.py "
    "(or the SQL it prints with --print-sql; see docs/security.md)"
)
"""Where an error about the database role sends the operator."""


class SQLConfigError(ValueError):
    """A database declaration that cannot be served (missing file, unsupported backend, unsafe role)."""


class StatementError(Exception):
    """A statement stopped by the executor's own limits (timeout, result size); the message is for the caller."""
