"""Errors the orchestrator raises to its callers. Each carries a message meant for users."""

from __future__ import annotations


class OrchestratorError(RuntimeError):
    """Base of the orchestrator's errors."""


class Overloaded(OrchestratorError):
    """Admission control refused a run or a call. Retryable: try again after ``retry_after_s``.

    ``stage`` names the overloaded stage (None when the limit is on runs in flight).
    """

    def __init__(self, message: str, *, retry_after_s: float = 1.0, stage: str | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        self.stage = stage


class NoHealthyReplica(OrchestratorError):
    """Every replica of a pool has failed; calls to it cannot be served."""


class BadRequest(OrchestratorError, ValueError):
    """Malformed input: unknown workflow or stage, missing workflow inputs."""


class UnknownRun(OrchestratorError, KeyError):
    """No run with this id (never existed, or evicted from the retained history)."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else "unknown run"


class DatabaseSetupError(OrchestratorError):
    """A database the workflow declares cannot be served safely (e.g. its role may write or reach the
    server's files); the message names the problem and the fix."""
