"""Pinpoint-shaped error answers (DESIGN.md §3): status, ``X-Amzn-ErrorType``,
``x-amzn-RequestId`` and a ``{"Message", "RequestID"}`` body. A 5xx never carries a trace."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.routing import raw_path
from worker.core.errors import (
    BadRequest,
    InternalServerError,
    MethodNotAllowed,
    NotFound,
    PinpointError,
)
from worker.core.outages import DATABASE, database_unreachable

log = structlog.get_logger("herald.api")


def request_id_of(request: Request) -> str:
    rid = getattr(request.state, "request_id", None)
    if rid is None:
        rid = str(uuid.uuid4())
        request.state.request_id = rid
    return rid


def error_response(request: Request, error: PinpointError) -> JSONResponse:
    rid = request_id_of(request)
    return JSONResponse(
        {"Message": error.message, "RequestID": rid},
        status_code=error.status_code,
        headers={"X-Amzn-ErrorType": error.error_type, "x-amzn-RequestId": rid},
    )


def install(app: FastAPI, unimplemented: Callable[[str, str], str | None]) -> None:
    """``unimplemented(method, raw_path)`` names the operation of Pinpoint's model that an
    unrouted request was calling, when Herald does not implement it."""
    @app.exception_handler(PinpointError)
    async def _pinpoint(request: Request, exc: PinpointError) -> JSONResponse:
        return error_response(request, exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code in (404, 405):
            # Not the text of an unknown resource: a user must be able to tell "Herald lacks
            # this operation" from "wrong id".
            operation = unimplemented(request.method, raw_path(request.scope))
            if operation is not None:
                return error_response(
                    request, NotFound(f"Herald does not implement {operation}")
                )
        if exc.status_code == 405:
            return error_response(
                request, MethodNotAllowed(f"{request.method} is not allowed on this resource")
            )
        if exc.status_code == 404:
            return error_response(request, NotFound("Resource not found"))
        kind = BadRequest if 400 <= exc.status_code < 500 else InternalServerError
        return error_response(request, kind(str(exc.detail)))

    @app.exception_handler(SQLAlchemyError)
    async def _database(request: Request, exc: SQLAlchemyError) -> JSONResponse:
        if database_unreachable(exc):
            DATABASE.lost(exc)  # logged once per outage, not once per request
            message = "The service is temporarily unable to reach its database"
        else:
            log.error("database error", error=type(exc).__name__,
                      detail=str(exc).splitlines()[0])
            message = "Internal server error"
        return error_response(request, InternalServerError(message))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", path=request.url.path)
        return error_response(request, InternalServerError("Internal server error"))
