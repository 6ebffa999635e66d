"""Response bodies of the REST API. They live in :mod:`distill.schemas` so that the Python client parses
answers into the same classes; this module keeps the API's import path."""

from __future__ import annotations

from distill.schemas import (
    ArtifactRead,
    EventRead,
    FileDeleted,
    FileRead,
    JobError,
    JobRead,
    ListRead,
)

__all__ = ["ArtifactRead", "EventRead", "FileDeleted", "FileRead", "JobError", "JobRead", "ListRead"]
