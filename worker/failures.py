"""Why a job stops early: a failure the user can act on, or a lost lease."""

from __future__ import annotations


class JobFailure(Exception):
    """A failure the user can act on: ``message`` names the field and says what to fix."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class LeaseLost(Exception):
    """Another worker owns the job now (or it was removed): stop without writing."""
