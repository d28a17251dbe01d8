"""The HTTP face of Herald: the FastAPI app that serves Pinpoint's REST API.

``create_app`` assembles per-process state (``api.state``), SigV4 (``api.auth``), the routes
(``api.routes``), Pinpoint's error envelope, OPTIONS answers, the dashboard and ``/metrics``.
Route functions parse, authorise, call a function in ``worker/`` and answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.routing import APIRoute

from api import dashboard, errors, metrics, operations
from api.auth import ClientGone
from api.ratelimit import build_rate_limiter
from api.routes import ROUTERS
from api.routing import raw_path
from api.state import Herald
from worker.core.config import Settings, get_settings
from worker.core.db import session_factory
from worker.core.errors import NotFound
from worker.delivery.notify import RedisListener, Waiters
from worker.delivery.runtime import wakeup_url
from worker.management.access_keys import KeyStore
from worker.management.channels import ChannelCache

CLIENT_CLOSED_REQUEST = 499
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": (
        "Authorization, Content-Type, X-Amz-Date, X-Amz-Security-Token, X-Amz-User-Agent, "
        "X-Api-Key"
    ),
    "Access-Control-Max-Age": "86400",
}

__all__ = ["Herald", "create_app"]


def _allowed_methods(path: str) -> set[str]:
    """The methods the API serves on a raw (still percent-encoded) path, for OPTIONS and its
    Allow header."""
    methods: set[str] = set()
    for route in (r for router in ROUTERS for r in router.routes):
        if isinstance(route, APIRoute) and route.path_regex.match(path):
            methods |= route.methods or set()
    return methods


def create_app(
    settings: Settings | None = None,
    *,
    enqueue: Callable[[str, list[int]], None] | None = None,
    lifespan_hooks: tuple[Callable[[Herald], Any], Callable[[Herald], Any]] | None = None,
) -> FastAPI:
    """The ASGI app. ``enqueue`` defaults to Celery; ``herald serve`` passes its in-process
    worker's, with hooks that start and stop it."""
    settings = settings or get_settings()
    settings.fernet_key()  # fail at start-up, not on the first channel update
    sessions = session_factory(settings)
    waiters = Waiters()
    if enqueue is None:
        from worker.delivery.tasks import enqueue as celery_enqueue

        enqueue = celery_enqueue
    herald = Herald(
        settings=settings,
        sessions=sessions,
        keys=KeyStore(settings, sessions),
        channel_cache=ChannelCache(settings),
        waiters=waiters,
        enqueue=enqueue,
        limiter=build_rate_limiter(settings),
    )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        waiters.bind(asyncio.get_running_loop())
        listener = None
        url = wakeup_url(settings)
        if url and not settings.embedded:
            listener = RedisListener(url, waiters)
            await listener.start()
        if lifespan_hooks:
            lifespan_hooks[0](herald)
        try:
            yield
        finally:
            if lifespan_hooks:
                lifespan_hooks[1](herald)
            if listener is not None:
                await listener.stop()

    app = FastAPI(
        title="Herald",
        description="A self-hosted server for the Amazon Pinpoint messaging REST API",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # A path that ends in "/" is a 404 like any unknown path, not a 307 to a URL built
        # from the client's Host header.
        redirect_slashes=False,
    )
    app.state.herald = herald
    errors.install(app, operations.unimplemented)

    @app.exception_handler(ClientGone)
    async def _client_gone(_request: Request, _exc: ClientGone) -> Response:
        # Not a server error: the request log records it as 499 (nginx's "client closed
        # request"), without a traceback.
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    for router in ROUTERS:
        app.include_router(router)

    @app.middleware("http")
    async def pinpoint_envelope(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        rid = errors.request_id_of(request)
        if request.method == "OPTIONS":
            methods = _allowed_methods(raw_path(request.scope))
            if not methods:
                return errors.error_response(request, NotFound("Resource not found"))
            allow = ", ".join(sorted(methods | {"OPTIONS"}))
            return Response(
                status_code=200,
                headers={"Allow": allow, "Access-Control-Allow-Methods": allow,
                         "x-amzn-RequestId": rid, **CORS_HEADERS},
            )
        response: Response = await call_next(request)
        response.headers.setdefault("x-amzn-RequestId", rid)
        if getattr(request.state, "body_unread", False):
            # Refused before its body was read: close, or the client's upload keeps the
            # connection (and the parser's buffer) busy after the answer.
            response.headers["Connection"] = "close"
        return response

    dashboard.install(app)
    metrics.install(app)  # last: its middleware is the outermost, it sees every request
    return app
