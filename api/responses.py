"""The statuses each route can answer, for the OpenAPI document: every error has the same body.

Routers list their statuses once (``APIRouter(responses=errors(...))``) and routes add their own
(``responses=errors(404, 409)``), so a client generated from the document knows every answer it can get.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: str
    message: str
    field: str | None


class ErrorResponse(BaseModel):
    """``{"error": {"code", "message", "field"}}``; a 422 for a malformed request adds ``errors``."""

    error: ErrorDetail


_WHEN = {
    307: "Redirect to a presigned download URL (an S3 store)",
    400: "The request body cannot be read (not UTF-8, malformed multipart)",
    401: "Missing, unknown or revoked API key",
    404: "No such object, or another tenant's",
    409: "Conflict: the object's state forbids this, or a request with this Idempotency-Key is in progress",
    413: "The upload is larger than the server's limit",
    422: "Invalid request: the error names the field",
    429: "Rate limit of this API key exceeded: retry after `Retry-After` seconds",
    503: "A service the API needs (database, queue) is unavailable: retry after `Retry-After` seconds",
}

_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for ``codes``: errors with :class:`ErrorResponse`, 307 with its ``Location``."""
    out: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        if code == 307:
            out[code] = {
                "description": _WHEN[code],
                "headers": {"Location": {"description": "presigned URL", "schema": {"type": "string"}}},
            }
            continue
        entry: dict[str, Any] = {"model": ErrorResponse, "description": _WHEN[code]}
        if code in (429, 503):
            entry["headers"] = _RETRY_AFTER
        out[code] = entry
    return out


COMMON = errors(401, 422, 429, 503)
"""What every authenticated route can answer."""
