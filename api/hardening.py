"""Bad input answers 4xx, never 500: NUL bytes in JSON bodies, values the database refuses, and a database
that cannot be reached (503, not 500).

Path and query parameters are bounded where they are declared (``api/params.py``); this module covers what
is only visible in a JSON body or at the database.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, OperationalError

from api.errors import Invalid, error_body
from api.ratelimit import RateLimited

log = logging.getLogger(__name__)


def find_nul(value: Any, path: str = "") -> str | None:
    """The dotted path of the first string (or key) in a JSON value that holds a NUL byte, else None."""
    if isinstance(value, str):
        return (path or "body") if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                return here
            found = find_nul(item, here)
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = find_nul(item, f"{path}.{index}" if path else str(index))
            if found is not None:
                return found
    return None


async def reject_nul_bytes(request: Request) -> None:
    """A JSON body whose strings hold NUL bytes answers 422 naming the field (Postgres cannot store them)."""
    if request.method not in ("POST", "PUT", "PATCH"):
        return
    if not request.headers.get("content-type", "").startswith("application/json"):
        return
    raw = await request.body()  # cached by Starlette: the route's body parsing reads it again for free
    if b"\\u0000" not in raw.lower():
        return
    try:
        body = json.loads(raw)
    except ValueError:
        return  # malformed JSON: the route's own validation answers 422
    field = find_nul(body)
    if field is not None:
        raise Invalid(f"{field}: must not contain NUL bytes (\\u0000)", field=field)


def install_hardening(app: FastAPI) -> None:
    """The NUL check on every route, and handlers for the database's refusals and outages.

    Call before the routers are included (a route takes the app's dependencies when it is added).
    """
    app.router.dependencies.append(Depends(reject_nul_bytes))

    @app.exception_handler(RateLimited)
    async def _rate_limited(_request: Request, exc: RateLimited) -> JSONResponse:
        return JSONResponse(
            error_body(exc.code, exc.message, exc.field),
            status_code=exc.status_code,
            headers={"Retry-After": str(exc.retry_after)},
        )

    @app.exception_handler(DataError)
    async def _data_error(_request: Request, exc: DataError) -> JSONResponse:
        # Any value the database refuses (NUL, too long, out of range) is bad input that got past validation.
        log.warning("the database refused a request's value: %s", exc.orig)
        message = f"a value in the request cannot be stored: {str(exc.orig).splitlines()[0]}"
        return JSONResponse(error_body("invalid_request", message, None), status_code=422)

    @app.exception_handler(OperationalError)
    async def _unavailable(_request: Request, exc: OperationalError) -> JSONResponse:
        log.error("database unavailable: %s", exc.orig)
        return JSONResponse(
            error_body("unavailable", "the database is unavailable; retry shortly", None),
            status_code=503,
            headers={"Retry-After": "5"},
        )
