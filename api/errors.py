"""Domain errors and the handlers that turn them (and request validation errors) into JSON 4xx answers.

Every error body is ``{"error": {"code", "message", "field"}}`` and the message names the field. A database
that is down, silent or too slow answers a JSON 503 with ``Retry-After``; any other unexpected error a
JSON 500.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException

from distill.db import is_transient

log = logging.getLogger(__name__)


class ApiError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, message: str, *, field: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        if code:
            self.code = code


class NotFound(ApiError):
    status_code = 404
    code = "not_found"


class Conflict(ApiError):
    status_code = 409
    code = "conflict"


class Invalid(ApiError):
    status_code = 422
    code = "invalid_request"


class Unauthorized(ApiError):
    status_code = 401
    code = "unauthorized"


class TooLarge(ApiError):
    status_code = 413
    code = "too_large"


def error_body(code: str, message: str, field: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "field": field, **extra}}


def _field_name(loc: tuple[Any, ...], body: Any) -> tuple[str, int]:
    """``data.train.file``-style name of the field an error is about, and how many of its parts the
    request body really has (a union error's most specific branch is the one that matched furthest).

    Pydantic puts the branch of a union it tried into the location (a tag such as ``mlp`` or a class name
    such as ``BuiltinData``): a part that is not in the body and is not the last one is such a branch.
    """
    if not loc:
        return "body", 0
    if loc[0] != "body":
        return ".".join(str(p) for p in loc[1:]) or str(loc[0]), len(loc)
    parts: list[str] = []
    matched = 0
    node = body
    last = len(loc) - 1
    for index, part in enumerate(loc[1:], start=1):
        in_dict = isinstance(node, dict) and part in node
        in_list = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if in_dict or in_list:
            node = node[part]
            matched += 1
        elif index < last:
            continue  # a union branch pydantic tried, not a field the user wrote
        parts.append(str(part))
    return ".".join(parts) or "body", matched


def _most_specific(errors: list[dict[str, Any]]) -> dict[str, Any]:
    """Of the errors pydantic reports (one per union branch), the one a person should read first."""
    vague = {"missing", "extra_forbidden", "dict_type", "model_type", "list_type"}
    return max(errors, key=lambda err: (err["matched"], err["type"] not in vague))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        return JSONResponse(
            error_body(exc.code, exc.message, exc.field), status_code=exc.status_code, headers=headers
        )

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        details = []
        for err in exc.errors():
            field, matched = _field_name(tuple(err.get("loc", ())), exc.body)
            msg = str(err.get("msg", "invalid value")).removeprefix("Value error, ")
            details.append({"field": field, "message": msg, "matched": matched, "type": err.get("type", "")})
        first = _most_specific(details) if details else {"field": "body", "message": "invalid request"}
        message = (
            first["message"]
            if first["message"].startswith(first["field"])
            else f"{first['field']}: {first['message']}"
        )
        details = [{"field": d["field"], "message": d["message"]} for d in details]
        return JSONResponse(
            error_body("invalid_request", message, first["field"], errors=details), status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(sa_exc.SQLAlchemyError)
    async def _database_error(request: Request, exc: sa_exc.SQLAlchemyError) -> JSONResponse:
        if not is_transient(exc):
            return await _unexpected(request, exc)
        retry_after = str(request.app.state.settings.retry_after_seconds)
        log.warning("database unavailable: %s: %s", type(exc).__name__, str(exc).splitlines()[0])
        return JSONResponse(
            error_body("unavailable", "the database is unavailable; try again shortly"),
            status_code=503,
            headers={"Retry-After": retry_after},
        )

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected error", exc_info=exc)
        message = f"internal error ({type(exc).__name__}); it has been logged"
        return JSONResponse(error_body("internal_error", message), status_code=500)
