"""Sending: SendUsersMessages, SendMessages and SendOTPMessage, reading their results back,
and VerifyOTPMessage.

Validate, persist, enqueue after commit, wait for final outcomes (or the sync timeout), answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Any

from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from api.auth import Authed, Call, Model
from api.routing import pinpoint_router
from api.state import Herald
from worker import wire
from worker.core.config import Settings
from worker.core.outages import BROKER, DATABASE, broker_unreachable, database_unreachable
from worker.intake.accept import Accepted, accept_messages_request, accept_users_request
from worker.intake.otp import accept_otp_request, verify_otp
from worker.management.channels import ChannelCache
from worker.results import answers
from worker.results.metrics import record_sync_wait

RECHECK_S = 1.0
router = pinpoint_router()


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
        return answers.count_unfinished(session, request_id)


async def _send(
    call: Call,
    app_id: str,
    model: type[Model],
    accept: Callable[
        [Session, str, Any, dict[str, Any], ChannelCache, Settings], Accepted
    ],
    answer: Callable[[str, str, Iterable[Any]], wire.WireModel],
) -> JSONResponse:
    """Both send operations: validate, persist, enqueue after commit, wait, answer.

    Once the rows are committed the request is accepted, whatever happens next: a broker or
    database outage after that point answers the endpoints as in progress, never a 5xx that
    would make the client send everything twice."""
    herald = call.herald
    started = time.monotonic()
    request, payload = call.parse(model)

    def persist() -> Accepted:
        with herald.transaction() as session:
            return accept(session, app_id, request, payload, herald.channel_cache,
                          herald.settings)

    accepted = await run_in_threadpool(persist)
    queued = await run_in_threadpool(_enqueue_all, herald, accepted)
    if accepted.pending and queued:
        await _await_outcomes(
            herald, accepted.request_id, started + herald.settings.sync_timeout_s
        )

    def read() -> dict[str, Any]:
        rows: Iterable[Any]
        try:
            with herald.sessions() as session:
                rows = answers.result_rows(session, accepted.request_id)
            DATABASE.back()
        except Exception as exc:
            if not database_unreachable(exc):
                raise
            DATABASE.lost(exc)
            rows = accepted.rows_as_planned()
        return answer(app_id, accepted.request_id, rows).to_wire()

    # A JSONResponse skips FastAPI's response-model pass over up to 1,500 results.
    return JSONResponse(await run_in_threadpool(read))


def _enqueue_all(herald: Herald, accepted: Accepted) -> bool:
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
    return await _send(call, app_id, wire.SendUsersMessageRequest, accept_users_request,
                       answers.users_response)


@router.post("/v1/apps/{app_id}/messages")
async def send_messages(app_id: str, call: Authed) -> JSONResponse:
    return await _send(call, app_id, wire.MessageRequest, accept_messages_request,
                       answers.messages_response)


@router.get("/v1/apps/{app_id}/users-messages/{request_id}")
def get_users_messages(app_id: str, request_id: str, call: Authed) -> dict[str, Any]:
    with call.herald.transaction() as session:
        answers.get_request(session, app_id, request_id, kind="users")
        rows = answers.result_rows(session, request_id)
    return answers.users_response(app_id, request_id, rows, extended=True).to_wire()


@router.get("/v1/apps/{app_id}/messages/{request_id}")
def get_messages(app_id: str, request_id: str, call: Authed) -> dict[str, Any]:
    with call.herald.transaction() as session:
        answers.get_request(session, app_id, request_id, kind="messages")
        rows = answers.result_rows(session, request_id)
    return answers.messages_response(app_id, request_id, rows, extended=True).to_wire()


@router.post("/v1/apps/{app_id}/otp")
async def send_otp_message(app_id: str, call: Authed) -> JSONResponse:
    return await _send(call, app_id, wire.SendOTPMessageRequestParameters, accept_otp_request,
                       answers.messages_response)


@router.post("/v1/apps/{app_id}/verify-otp")
def verify_otp_message(app_id: str, call: Authed) -> dict[str, Any]:
    request, _ = call.parse(wire.VerifyOTPMessageRequestParameters)
    with call.herald.transaction() as session:
        valid = verify_otp(session, app_id, request, call.herald.settings)
    return wire.VerificationResponse(valid=valid).to_wire()
