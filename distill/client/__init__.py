"""Distill's light Python client: :class:`Client` for the REST API (pydantic, httpx, tenacity; no torch).

``from distill import Client`` is the short way in.
"""

from __future__ import annotations

from distill.client.sdk import (
    DEFAULT_API_URL,
    TERMINAL_STATUSES,
    Client,
    DistillError,
    StreamItem,
    StreamUnavailable,
)

__all__ = [
    "DEFAULT_API_URL",
    "TERMINAL_STATUSES",
    "Client",
    "DistillError",
    "StreamItem",
    "StreamUnavailable",
]
