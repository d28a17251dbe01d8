"""Who is calling: SigV4 verification, the access key's scope, the rate limit, the body.

Every signed route depends on ``authenticated``: headers are checked before the body is read,
the body is read once (7 MB limit, a deadline), the signature verified, the app scope and the
rate limit applied. ``Call.parse`` turns the body into a wire model or a Pinpoint 400.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import ValidationError
from starlette.requests import ClientDisconnect
from starlette.types import Scope

from api import errors
from api.sigv4 import SignatureError, check_headers, verify
from api.state import Herald
from worker import wire
from worker.core.errors import BadRequest, Forbidden, PayloadTooLarge
from worker.management.access_keys import Principal
from worker.wire.validation import describe

MAX_BODY = 7 * 1024 * 1024
MAX_JSON_DEPTH = 32
Model = TypeVar("Model", bound=wire.WireModel)
ACCESS_KEY_SCOPE = "herald.access_key_id"  # the request log's access_key_id (api.metrics)


def name_access_key(scope: Scope, key_id: str) -> None:
    """Record the claimed access key of a request for its log event."""
    scope[ACCESS_KEY_SCOPE] = key_id


@dataclass
class Call:
    """An authenticated request."""

    herald: Herald
    principal: Principal
    body: bytes
    request_id: str
    region: str  # the region the request was signed for: ARNs in answers carry it

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
        name_access_key(request.scope, claim.access_key_id)
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
    call = Call(herald=herald, principal=principal, body=body, request_id=rid,
                region=verified.region)
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
