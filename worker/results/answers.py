"""Reading a send back: its endpoint results as Pinpoint answers them, final or not.

The API answers SendUsersMessages and SendMessages from these once every recipient is final (or
the sync timeout passes), and serves them again at ``GET .../messages/{request-id}``; ``herald
results`` prints the same.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from worker import wire
from worker.core.errors import NotFound
from worker.core.models import Delivery, SendRequest
from worker.core.vocabulary import ADDRESS_PREFIX, DeliveryStatus

IN_PROGRESS = "Delivery in progress"


def count_unfinished(session: Session, request_id: str) -> int:
    return session.scalar(
        select(func.count()).where(Delivery.request_id == request_id, Delivery.final.is_(False))
    ) or 0


_RESULT_COLUMNS = (
    Delivery.user_id, Delivery.endpoint_id, Delivery.recipient, Delivery.address,
    Delivery.delivery_status, Delivery.status_code, Delivery.status_message,
    Delivery.message_id, Delivery.updated_token, Delivery.attempts, Delivery.final,
)


def result_rows(session: Session, request_id: str) -> list[Any]:
    """A request's rows as plain tuples: an answer reads up to 1,500 of them, and ORM
    objects would cost more than the query."""
    return list(session.execute(
        select(*_RESULT_COLUMNS).where(Delivery.request_id == request_id).order_by(Delivery.id)
    ))


def _result(row: Any, extended: bool) -> dict[str, Any]:
    """The members of a row's result, final or not (§4: "a retry is scheduled")."""
    if row.delivery_status is None:
        status, code, message = DeliveryStatus.TEMPORARY_FAILURE.value, 202, IN_PROGRESS
    else:
        status, code = row.delivery_status, row.status_code or 0
        message = row.status_message or ""
        if not row.final:
            message = f"Retry scheduled after attempt {row.attempts}: {message or ''}".rstrip(": ")
    return {
        "delivery_status": status,
        "status_code": code,
        "message_id": row.message_id or None,
        "status_message": message or None,
        "updated_token": row.updated_token or None,
        "attempts": row.attempts if extended else None,
        "final": row.final if extended else None,
    }


def endpoint_result(row: Any, *, extended: bool = False) -> wire.EndpointMessageResult:
    return wire.EndpointMessageResult(
        address=row.address if row.address is not None else "", **_result(row, extended)
    )


def users_response(
    app_id: str, request_id: str, rows: Iterable[Any], *, extended: bool = False
) -> wire.SendUsersMessageResponse:
    """SendUsersMessages' answer: ``Result`` by user id, then endpoint id."""
    results: dict[str, dict[str, wire.EndpointMessageResult]] = {}
    for row in rows:
        user = results.setdefault(row.user_id or "", {})
        key = row.endpoint_id if row.endpoint_id is not None else ""
        user[key] = endpoint_result(row, extended=extended)
    return wire.SendUsersMessageResponse(application_id=app_id, request_id=request_id,
                                         result=results)


def messages_response(
    app_id: str, request_id: str, rows: Iterable[Any], *, extended: bool = False
) -> wire.MessageResponse:
    """SendMessages' answer: ``Result`` by address, ``EndpointResult`` by endpoint id."""
    by_address: dict[str, wire.MessageResult] = {}
    by_endpoint: dict[str, wire.EndpointMessageResult] = {}
    for row in rows:
        if row.endpoint_id is not None:
            # Keyed by the id as the request gave it; endpoint_id is the endpoint as stored
            # (ids are case-insensitive, so the two may differ in case).
            by_endpoint[row.recipient] = endpoint_result(row, extended=extended)
        else:
            # MessageResult has no Address member
            by_address[row.recipient[len(ADDRESS_PREFIX):]] = wire.MessageResult(
                **_result(row, extended)
            )
    return wire.MessageResponse(
        application_id=app_id, request_id=request_id,
        result=by_address or None, endpoint_result=by_endpoint or None,
    )


def get_request(
    session: Session, app_id: str, request_id: str, kind: str | None = None
) -> SendRequest:
    request = session.get(SendRequest, request_id)
    if request is None or request.app_id != app_id or (kind and request.kind != kind):
        raise NotFound("Resource not found")
    return request
