"""The HTTP face of Herald: Pinpoint's REST API over FastAPI.

Route functions parse, authorise, call a function in ``worker/`` and answer; the domain lives
there. Each request's body is read once, checked against the 7 MB limit, verified with SigV4,
and parsed against the wire schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import structlog
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from pydantic import ValidationError
from sqlalchemy.orm import Session
from starlette.requests import ClientDisconnect

from api import dashboard, errors, metrics
from api.ratelimit import RateLimiter, build_rate_limiter
from api.sigv4 import SignatureError, check_headers, verify
from worker import applications, channels, endpoints, health, sending, wire
from worker.access_keys import KeyStore, Principal
from worker.channels import ChannelCache
from worker.config import Settings, get_settings
from worker.db import session_factory
from worker.errors import BadRequest, Forbidden, NotFound, PayloadTooLarge
from worker.metrics import record_sync_wait
from worker.notify import RedisListener, Waiters
from worker.outages import BROKER, DATABASE, broker_unreachable, database_unreachable
from worker.runtime import wakeup_url
from worker.validation import describe

log = structlog.get_logger("herald.api")
MAX_BODY = 7 * 1024 * 1024
MAX_JSON_DEPTH = 32
RECHECK_S = 1.0
CLIENT_CLOSED_REQUEST = 499
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Headers": (
        "Authorization, Content-Type, X-Amz-Date, X-Amz-Security-Token, X-Amz-User-Agent, "
        "X-Api-Key"
    ),
    "Access-Control-Max-Age": "86400",
}
Model = TypeVar("Model", bound=wire.WireModel)


@dataclass
class Herald:
    """Per-process state shared by the routes."""

    settings: Settings
    sessions: Any
    keys: KeyStore
    channel_cache: ChannelCache
    waiters: Waiters
    enqueue: Callable[[str, list[int]], None]
    limiter: RateLimiter

    def transaction(self) -> contextlib.AbstractContextManager[Session]:
        return _transaction(self.sessions)


@contextlib.contextmanager
def _transaction(sessions: Any) -> Any:
    with sessions() as session, session.begin():
        yield session


@dataclass
class Call:
    """An authenticated request."""

    herald: Herald
    principal: Principal
    body: bytes
    request_id: str

    def authorize(self, app_id: str) -> None:
        if not self.principal.may_use(app_id):
            raise Forbidden("The access key is not allowed to use this application")

    def json(self) -> dict[str, Any]:
        if not self.body.strip():
            raise BadRequest("The request body is empty")
        try:
            value = json.loads(
                self.body, parse_constant=_not_json, parse_float=_finite_float
            )
        except (ValueError, RecursionError):
            raise BadRequest("The request body is not valid JSON") from None
        if not isinstance(value, dict):
            raise BadRequest("The request body must be a JSON object")
        if _depth(value) > MAX_JSON_DEPTH:
            raise BadRequest(f"The request body nests deeper than {MAX_JSON_DEPTH} levels")
        if _has_unstorable_text(value):
            raise BadRequest(
                "The request body contains a NUL character or an unpaired surrogate "
                "(\\u0000, \\ud800-\\udfff)"
            )
        return value

    def parse(self, model: type[Model]) -> tuple[Model, dict[str, Any]]:
        raw = self.json()
        try:
            return model.model_validate(raw), raw
        except ValidationError as exc:
            raise BadRequest(describe(exc)) from None


def _not_json(constant: str) -> None:
    raise ValueError(f"{constant} is not JSON")  # json.loads accepts NaN and Infinity


def _finite_float(literal: str) -> float:
    number = float(literal)
    if not math.isfinite(number):  # 1e400: no database or JSON encoder takes infinity
        raise ValueError(f"{literal[:20]} is out of range")
    return number


_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def _has_unstorable_text(value: Any) -> bool:
    """NUL and lone surrogates (both reachable through \\u escapes) cannot be stored in
    Postgres text or JSONB, nor encoded as UTF-8."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if _UNSTORABLE.search(item):
                return True
        elif isinstance(item, dict):
            pending.extend(item.keys())
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def _depth(value: Any, level: int = 1) -> int:
    if level > MAX_JSON_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level)
    return level


class ClientGone(Exception):
    """The client closed the connection before its body arrived: nobody to answer."""


async def _read_body(request: Request, timeout_s: float) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise PayloadTooLarge("Request body exceeds the 7 MB limit")
    chunks = []
    size = 0
    try:
        # A signed client that trickles its body would hold a connection and a buffer for
        # as long as it likes; uvicorn has no body timeout of its own.
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_BODY:
                    raise PayloadTooLarge("Request body exceeds the 7 MB limit")
                chunks.append(chunk)
    except TimeoutError:
        raise BadRequest(f"The request body did not arrive within {timeout_s:g} s") from None
    except ClientDisconnect:
        raise ClientGone from None
    return b"".join(chunks)


def _signature_headers(request: Request) -> dict[str, list[str]]:
    headers: dict[str, list[str]] = {}
    for name, value in request.headers.raw:
        headers.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
    return headers


async def authenticated(request: Request) -> Call:
    herald: Herald = request.app.state.herald
    rid = errors.request_id_of(request)
    headers = _signature_headers(request)
    region = None if herald.settings.region == "*" else herald.settings.region

    def secret_for(key_id: str) -> str | None:
        principal = herald.keys.principal(key_id)
        return principal.secret if principal is not None else None

    # Until the body has been read, any answer closes the connection (see pinpoint_envelope):
    # what the client is still sending is never read.
    request.state.body_unread = True
    try:
        # Headers first: an unsigned client, an unknown key or a stale date is refused before
        # a byte of its (up to 7 MiB) body is read.
        claim = await run_in_threadpool(
            check_headers, headers=headers, secret_for=secret_for, region=region
        )
        # A key Herald knows, not yet proven by the signature: the log names who claimed it.
        metrics.name_access_key(request.scope, claim.access_key_id)
        body = await _read_body(request, herald.settings.body_timeout_s)
        request.state.body_unread = False
        verified = await run_in_threadpool(
            verify,
            method=request.method,
            raw_path=request.scope.get("raw_path", b"").decode("latin-1").split("?")[0]
            or request.url.path,
            raw_query=request.scope.get("query_string", b"").decode("latin-1"),
            headers=headers,
            body=body,
            secret_for=secret_for,
            region=region,
            claim=claim,
        )
    except SignatureError as exc:
        raise Forbidden(str(exc)) from None
    principal = herald.keys.principal(verified.access_key_id)
    assert principal is not None
    call = Call(herald=herald, principal=principal, body=body, request_id=rid)
    if any("\x00" in str(value) for value in request.path_params.values()):
        raise BadRequest("A path parameter contains a NUL character")
    # Every route with an {app_id} is authorised here, once. Every signed call spends a token:
    # app-scoped operations from the app's bucket (after the scope check, so no key spends
    # another app's), the others from the key's own.
    app_id = request.path_params.get("app_id")
    if app_id is not None:
        call.authorize(app_id)
    await herald.limiter.check(app_id if app_id is not None else f"key:{principal.key_id}")
    return call


Authed = Annotated[Call, Depends(authenticated)]


def _accepted(call: Call) -> dict[str, str]:
    return {"Message": "Accepted", "RequestID": call.request_id}


router = APIRouter()


# --- applications ----------------------------------------------------------------------------


@router.post("/v1/apps", status_code=201)
def create_app_route(call: Authed) -> dict[str, Any]:
    if call.principal.app_ids is not None:
        raise Forbidden("The access key is scoped to applications and cannot create one")
    request, _ = call.parse(wire.CreateApplicationRequest)
    with call.herald.transaction() as session:
        app = applications.create_application(session, request)
        return applications.application_response(app, call.herald.settings.region)


@router.get("/v1/apps")
def get_apps(
    request: Request, call: Authed
) -> dict[str, Any]:
    with call.herald.transaction() as session:
        apps, token = applications.list_applications(
            session, request.query_params.get("page-size"), request.query_params.get("token"),
            call.principal.app_ids,
        )
        items = [applications.application_response(a, call.herald.settings.region) for a in apps]
    response: dict[str, Any] = {"Item": items}
    if token:
        response["NextToken"] = token
    return response


@router.get("/v1/apps/{app_id}")
def get_app(app_id: str, call: Authed) -> dict[str, Any]:
    with call.herald.transaction() as session:
        app = applications.get_application(session, app_id)
        return applications.application_response(app, call.herald.settings.region)


@router.delete("/v1/apps/{app_id}")
def delete_app(app_id: str, call: Authed) -> dict[str, Any]:
    with call.herald.transaction() as session:
        app = applications.delete_application(session, app_id)
        response = applications.application_response(app, call.herald.settings.region)
    call.herald.channel_cache.clear()
    return response


# --- endpoints ---------------------------------------------------------------------------------


@router.put("/v1/apps/{app_id}/endpoints/{endpoint_id}", status_code=202)
def update_endpoint(
    app_id: str, endpoint_id: str, call: Authed
) -> dict[str, Any]:
    request, _ = call.parse(wire.EndpointRequest)
    with call.herald.transaction() as session:
        endpoints.upsert_endpoints(session, app_id, [(endpoint_id, request)])
    return _accepted(call)


@router.put("/v1/apps/{app_id}/endpoints", status_code=202)
def update_endpoints_batch(app_id: str, call: Authed) -> dict[str, Any]:
    request, _ = call.parse(wire.EndpointBatchRequest)
    if not 1 <= len(request.item) <= endpoints.MAX_BATCH_ITEMS:
        raise BadRequest(f"Item must hold from 1 to {endpoints.MAX_BATCH_ITEMS} endpoints")
    items: list[tuple[str, wire.EndpointRequest]] = []
    for index, item in enumerate(request.item):
        if not item.id:
            raise BadRequest(f"Item[{index}].Id is required")
        items.append((item.id, item))
    with call.herald.transaction() as session:
        endpoints.upsert_endpoints(session, app_id, items)
    return _accepted(call)


@router.get("/v1/apps/{app_id}/endpoints/{endpoint_id}")
def get_endpoint(
    app_id: str, endpoint_id: str, call: Authed
) -> dict[str, Any]:
    with call.herald.transaction() as session:
        return endpoints.endpoint_response(endpoints.get_endpoint(session, app_id, endpoint_id))


@router.delete("/v1/apps/{app_id}/endpoints/{endpoint_id}", status_code=202)
def delete_endpoint(
    app_id: str, endpoint_id: str, call: Authed
) -> dict[str, Any]:
    with call.herald.transaction() as session:
        endpoint = endpoints.delete_endpoint(session, app_id, endpoint_id)
        return endpoints.endpoint_response(endpoint)


@router.get("/v1/apps/{app_id}/users/{user_id}")
def get_user_endpoints(
    app_id: str, user_id: str, call: Authed
) -> dict[str, Any]:
    with call.herald.transaction() as session:
        found = endpoints.user_endpoints(session, app_id, user_id)
        return {"Item": [endpoints.endpoint_response(e) for e in found]}


@router.delete("/v1/apps/{app_id}/users/{user_id}", status_code=202)
def delete_user_endpoints(
    app_id: str, user_id: str, call: Authed
) -> dict[str, Any]:
    with call.herald.transaction() as session:
        found = endpoints.delete_user_endpoints(session, app_id, user_id)
        return {"Item": [endpoints.endpoint_response(e) for e in found]}


# --- channels ----------------------------------------------------------------------------------


def _channel_response(channel: Any) -> dict[str, Any]:
    return channels.channel_response(channel, secrets_present=channels.secret_names(channel))


@router.get("/v1/apps/{app_id}/channels")
def get_channels(app_id: str, call: Authed) -> dict[str, Any]:
    with call.herald.transaction() as session:
        found = channels.list_channels(session, app_id)
        return {"Channels": {c.channel_type: _channel_response(c) for c in found}}


@router.put("/v1/apps/{app_id}/channels/{kind}")
def update_channel(app_id: str, kind: str, call: Authed) -> dict[str, Any]:
    channels.require_kind(kind)
    body = call.json()
    with call.herald.transaction() as session:
        response = _channel_response(channels.update_channel(session, app_id, kind, body))
    call.herald.channel_cache.clear()
    return response


@router.get("/v1/apps/{app_id}/channels/{kind}")
def get_channel(app_id: str, kind: str, call: Authed) -> dict[str, Any]:
    channels.require_kind(kind)
    with call.herald.transaction() as session:
        return _channel_response(channels.get_channel(session, app_id, kind))


@router.delete("/v1/apps/{app_id}/channels/{kind}")
def delete_channel(app_id: str, kind: str, call: Authed) -> dict[str, Any]:
    channels.require_kind(kind)
    with call.herald.transaction() as session:
        channel = channels.delete_channel(session, app_id, kind)
        response = channels.channel_response(channel, secrets_present=frozenset())
    call.herald.channel_cache.clear()
    return response


# --- sending -------------------------------------------------------------------------------------


async def _await_outcomes(herald: Herald, request_id: str, deadline: float) -> None:
    """Until every recipient is final or the deadline passes; woken by workers, re-checking
    the database at most every second in case a wake-up was lost."""
    began = time.monotonic()
    with herald.waiters.watching(request_id) as event:
        while True:
            try:
                unfinished = await run_in_threadpool(_count_unfinished, herald, request_id)
            except Exception as exc:
                if not database_unreachable(exc):
                    raise
                return  # the answer says what is known (see _send)
            remaining = deadline - time.monotonic()
            if unfinished == 0 or remaining <= 0:
                record_sync_wait(time.monotonic() - began, complete=unfinished == 0)
                return
            event.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(remaining, RECHECK_S))


def _count_unfinished(herald: Herald, request_id: str) -> int:
    with herald.sessions() as session:
        return sending.count_unfinished(session, request_id)


async def _send(
    call: Call,
    app_id: str,
    model: type[Model],
    accept: Callable[
        [Session, str, Any, dict[str, Any], ChannelCache, int | None], sending.Accepted
    ],
    results: Callable[..., dict[str, Any]],
    answer: Callable[..., dict[str, Any]],
) -> tuple[str, dict[str, Any]]:
    """Both send operations: validate, persist, enqueue after commit, wait, answer.

    Once the rows are committed the request is accepted, whatever happens next: a broker or
    database outage after that point answers the endpoints as in progress, never a 5xx that
    would make the client send everything twice."""
    herald = call.herald
    started = time.monotonic()
    request, payload = call.parse(model)

    def persist() -> sending.Accepted:
        with herald.transaction() as session:
            return accept(session, app_id, request, payload, herald.channel_cache,
                          herald.settings.max_inflight_sends_per_app)

    accepted = await run_in_threadpool(persist)
    queued = await run_in_threadpool(_enqueue_all, herald, accepted)
    if accepted.pending and queued:
        await _await_outcomes(
            herald, accepted.request_id, started + herald.settings.sync_timeout_s
        )

    def read() -> dict[str, Any]:
        try:
            with herald.sessions() as session:
                answer_now = results(session, accepted.request_id)
            DATABASE.back()
            return answer_now
        except Exception as exc:
            if not database_unreachable(exc):
                raise
            DATABASE.lost(exc)
            return answer(accepted.rows_as_planned())

    return accepted.request_id, await run_in_threadpool(read)


def _enqueue_all(herald: Herald, accepted: sending.Accepted) -> bool:
    """Hand the request's batches to the workers. The rows are committed already, so a broker
    outage is not the caller's error: the send is answered as in progress and the recovery
    sweep enqueues the rows once the broker is back. (A 5xx here would make the client send
    everything a second time.)"""
    try:
        for batch in accepted.batches(herald.settings.batch_size):
            herald.enqueue(accepted.request_id, batch)
    except Exception as exc:
        if not broker_unreachable(exc):
            raise
        BROKER.lost(exc)
        return False
    BROKER.back()
    return True


@router.post("/v1/apps/{app_id}/users-messages")
async def send_users_messages(app_id: str, call: Authed) -> JSONResponse:
    request_id, results = await _send(
        call, app_id, wire.SendUsersMessageRequest, sending.accept_users_request,
        sending.users_results, sending.users_answer,
    )
    # A JSONResponse skips FastAPI's response-model pass over up to 1,500 results.
    return JSONResponse({"ApplicationId": app_id, "RequestId": request_id, "Result": results})


@router.post("/v1/apps/{app_id}/messages")
async def send_messages(app_id: str, call: Authed) -> JSONResponse:
    request_id, results = await _send(
        call, app_id, wire.MessageRequest, sending.accept_messages_request,
        sending.messages_results, sending.messages_answer,
    )
    return JSONResponse({"ApplicationId": app_id, "RequestId": request_id, **results})


@router.get("/v1/apps/{app_id}/users-messages/{request_id}")
def get_users_messages(app_id: str, request_id: str, call: Authed) -> dict[str, Any]:
    with call.herald.transaction() as session:
        sending.get_request(session, app_id, request_id, kind="users")
        results = sending.users_results(session, request_id, extended=True)
    return {"ApplicationId": app_id, "RequestId": request_id, "Result": results}


@router.get("/v1/apps/{app_id}/messages/{request_id}")
def get_messages(app_id: str, request_id: str, call: Authed) -> dict[str, Any]:
    with call.herald.transaction() as session:
        sending.get_request(session, app_id, request_id, kind="messages")
        results = sending.messages_results(session, request_id, extended=True)
    return {"ApplicationId": app_id, "RequestId": request_id, **results}


# --- service routes (unsigned) ---------------------------------------------------------------

service = APIRouter()


@service.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@service.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    herald: Herald = request.app.state.herald
    problems = health.problems(herald.settings, herald.sessions)
    if "database" in problems:
        return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
    if problems:
        # Still ready: sends are accepted into the database and delivered once the broker
        # (or Redis) is back. Taking the API out of the load balancer would refuse them.
        return JSONResponse({"status": "degraded", "problems": problems})
    return JSONResponse({"status": "ready"})


# --- assembly ---------------------------------------------------------------------------------


def _allowed_methods(path: str) -> set[str]:
    """The methods the API serves on a path (for OPTIONS and its Allow header)."""
    methods: set[str] = set()
    for route in (*router.routes, *service.routes):
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
        from worker.tasks import enqueue as celery_enqueue

        enqueue = celery_enqueue
    herald = Herald(
        settings=settings,
        sessions=sessions,
        keys=KeyStore(settings, sessions),
        channel_cache=ChannelCache(),
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
    errors.install(app)

    @app.exception_handler(ClientGone)
    async def _client_gone(_request: Request, _exc: ClientGone) -> Response:
        # Not a server error: the request log records it as 499 (nginx's "client closed
        # request"), without a traceback.
        return Response(status_code=CLIENT_CLOSED_REQUEST)

    app.include_router(service)
    app.include_router(router)

    @app.middleware("http")
    async def pinpoint_envelope(request: Request, call_next: Any) -> Response:
        rid = errors.request_id_of(request)
        if request.method == "OPTIONS":
            methods = _allowed_methods(request.url.path)
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
