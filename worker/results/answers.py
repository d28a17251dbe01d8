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

from worker.core.errors import NotFound
from worker.core.models import Delivery, SendRequest
from worker.core.vocabulary import DeliveryStatus
from worker.intake.accept import ADDRESS_PREFIX

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


def _result_rows(session: Session, request_id: str) -> Iterable[Any]:
    """A request's rows as plain tuples: an answer reads up to 1,500 of them, and ORM
    objects would cost more than the query."""
    return session.execute(
        select(*_RESULT_COLUMNS).where(Delivery.request_id == request_id).order_by(Delivery.id)
    )


def result_of(row: Any, *, extended: bool = False) -> dict[str, Any]:
    """The EndpointMessageResult for a row, final or not (§4: "a retry is scheduled")."""
    if row.delivery_status is None:
        status, code, message = DeliveryStatus.TEMPORARY_FAILURE.value, 202, IN_PROGRESS
    else:
        status, code = row.delivery_status, row.status_code or 0
        message = row.status_message or ""
        if not row.final:
            message = f"Retry scheduled after attempt {row.attempts}: {message or ''}".rstrip(": ")
    result: dict[str, Any] = {
        "Address": row.address if row.address is not None else "",
        "DeliveryStatus": status,
        "StatusCode": code,
    }
    for key, value in (("MessageId", row.message_id), ("StatusMessage", message),
                       ("UpdatedToken", row.updated_token)):
        if value:
            result[key] = value
    if extended:
        result["Attempts"] = row.attempts
        result["Final"] = row.final
    return result


def users_results(
    session: Session, request_id: str, *, extended: bool = False
) -> dict[str, dict[str, dict[str, Any]]]:
    return users_answer(_result_rows(session, request_id), extended=extended)


def users_answer(
    rows: Iterable[Any], *, extended: bool = False
) -> dict[str, dict[str, dict[str, Any]]]:
    """SendUsersMessages' ``Result``: by user id, then endpoint id."""
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for row in rows:
        user = results.setdefault(row.user_id or "", {})
        key = row.endpoint_id if row.endpoint_id is not None else ""
        user[key] = result_of(row, extended=extended)
    return results


def messages_results(
    session: Session, request_id: str, *, extended: bool = False
) -> dict[str, dict[str, dict[str, Any]]]:
    return messages_answer(_result_rows(session, request_id), extended=extended)


def messages_answer(
    rows: Iterable[Any], *, extended: bool = False
) -> dict[str, dict[str, dict[str, Any]]]:
    """SendMessages' answer: ``Result`` by address, ``EndpointResult`` by endpoint id."""
    by_address: dict[str, dict[str, Any]] = {}
    by_endpoint: dict[str, dict[str, Any]] = {}
    for row in rows:
        result = result_of(row, extended=extended)
        if row.endpoint_id is not None:
            by_endpoint[row.endpoint_id] = result
        else:
            result.pop("Address", None)  # MessageResult has no Address member
            by_address[row.recipient[len(ADDRESS_PREFIX):]] = result
    answer: dict[str, dict[str, dict[str, Any]]] = {}
    if by_address:
        answer["Result"] = by_address
    if by_endpoint:
        answer["EndpointResult"] = by_endpoint
    return answer


def get_request(
    session: Session, app_id: str, request_id: str, kind: str | None = None
) -> SendRequest:
    request = session.get(SendRequest, request_id)
    if request is None or request.app_id != app_id or (kind and request.kind != kind):
        raise NotFound("Resource not found")
    return request
