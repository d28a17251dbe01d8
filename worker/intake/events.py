"""PutEvents: endpoint updates and events from client SDKs (Amplify, the mobile SDKs).

Each batch item is judged on its own, as Pinpoint did: its ``Endpoint`` is upserted exactly as
UpdateEndpoint would (same validation, same quotas), each of its events is accepted or refused,
and a refusal is that item's (or that event's) 400 entry in the answer while the rest go on.
Accepted events go into ``app_events``, the outbox the app's event stream forwards from.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError
from sqlalchemy import insert
from sqlalchemy.orm import Session

from worker import wire
from worker.core.db import utcnow
from worker.core.errors import BadRequest
from worker.core.models import AppEvent
from worker.management.applications import get_application
from worker.management.endpoints import MAX_ENDPOINT_ID, upsert_endpoints
from worker.wire.validation import describe

# Pinpoint's quotas for events ("Amazon Pinpoint quotas", Events).
MAX_BATCH_ITEMS = 100
MAX_EVENTS = 100  # per request, over all items
MAX_EVENT_ATTRIBUTES = 40
MAX_EVENT_METRICS = 40
MAX_EVENT_TYPE = 50
MAX_ATTRIBUTE_NAME = 50
MAX_ATTRIBUTE_VALUE = 200
MAX_EVENT_ID = 256

ACCEPTED = wire.ItemStatus(status_code=202, message="Accepted")


def _refused(message: str) -> wire.ItemStatus:
    return wire.ItemStatus(status_code=400, message=message)


def _timestamp(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"Timestamp '{value[:40]}' is not an ISO 8601 date and time") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _check_event(event_id: str, event: wire.Event) -> datetime:
    """The event's time; ValueError saying what is wrong with it."""
    if not event_id or len(event_id) > MAX_EVENT_ID:
        raise ValueError(f"An event id must be 1 to {MAX_EVENT_ID} characters")
    if not event.event_type or len(event.event_type) > MAX_EVENT_TYPE:
        raise ValueError(f"EventType must be 1 to {MAX_EVENT_TYPE} characters")
    attributes = event.attributes or {}
    if len(attributes) > MAX_EVENT_ATTRIBUTES:
        raise ValueError(f"An event may have at most {MAX_EVENT_ATTRIBUTES} Attributes")
    if len(event.metrics or {}) > MAX_EVENT_METRICS:
        raise ValueError(f"An event may have at most {MAX_EVENT_METRICS} Metrics")
    for name in [*attributes, *(event.metrics or {})]:
        if not name or len(name) > MAX_ATTRIBUTE_NAME:
            raise ValueError(
                f"Attribute and metric names must be 1 to {MAX_ATTRIBUTE_NAME} characters"
            )
    for name, value in attributes.items():
        if len(value) > MAX_ATTRIBUTE_VALUE:
            raise ValueError(
                f"Attributes.{name} is longer than {MAX_ATTRIBUTE_VALUE} characters"
            )
    return _timestamp(event.timestamp)


def _upsert_endpoint(
    session: Session, app_id: str, endpoint_id: str, raw: Any
) -> wire.ItemStatus:
    if not isinstance(raw, dict):
        return _refused("Endpoint is required and must be an object")
    try:
        endpoint = wire.EndpointRequest.model_validate(raw)
    except ValidationError as exc:
        return _refused(f"Endpoint: {describe(exc)}")
    # A savepoint per item: an endpoint refused half-way leaves nothing behind.
    savepoint = session.begin_nested()
    try:
        upsert_endpoints(session, app_id, [(endpoint_id, endpoint)])
    except BadRequest as exc:
        savepoint.rollback()
        return _refused(exc.message)
    savepoint.commit()
    return ACCEPTED


def put_events(
    session: Session, app_id: str, request: wire.EventsRequest
) -> wire.EventsResponse:
    get_application(session, app_id)
    items = request.batch_item
    if not 1 <= len(items) <= MAX_BATCH_ITEMS:
        raise BadRequest(f"BatchItem must hold from 1 to {MAX_BATCH_ITEMS} items")
    total = sum(len(i.get("Events") or {}) for i in items.values()
                if isinstance(i.get("Events"), dict))
    if total > MAX_EVENTS:
        raise BadRequest(f"A request may carry at most {MAX_EVENTS} events; this one has {total}")
    now = utcnow()
    results: dict[str, wire.ItemResponse] = {}
    stored: list[dict[str, Any]] = []
    for endpoint_id, item in items.items():
        events = item.get("Events")
        answers: dict[str, wire.ItemStatus] = {}
        if not isinstance(events, dict):
            results[endpoint_id] = wire.ItemResponse(
                endpoint_item_response=_refused(
                    "Events is required and must be a map of events by id"),
                events_item_response={},
            )
            continue
        if not 1 <= len(endpoint_id) <= MAX_ENDPOINT_ID:
            # Events are stored under their endpoint's id: one that cannot be one refuses them.
            problem = f"An endpoint id must be 1 to {MAX_ENDPOINT_ID} characters"
            results[endpoint_id] = wire.ItemResponse(
                endpoint_item_response=_refused(problem),
                events_item_response={event_id: _refused(problem) for event_id in events},
            )
            continue
        endpoint_status = _upsert_endpoint(session, app_id, endpoint_id, item.get("Endpoint"))
        for event_id, raw in events.items():
            try:
                event = wire.Event.model_validate(raw)
                moment = _check_event(event_id, event)
            except ValidationError as exc:
                answers[event_id] = _refused(describe(exc))
                continue
            except ValueError as exc:
                answers[event_id] = _refused(str(exc))
                continue
            answers[event_id] = ACCEPTED
            stored.append({
                "app_id": app_id,
                "endpoint_id": endpoint_id,
                "event_id": event_id,
                "event_type": event.event_type,
                "event_timestamp": moment,
                "attributes": event.attributes or {},
                "metrics": event.metrics or {},
                "session": event.session.to_wire() if event.session else None,
                "event": raw,
                "created_at": now,
                "forwarded_at": None,
            })
        results[endpoint_id] = wire.ItemResponse(
            endpoint_item_response=endpoint_status, events_item_response=answers
        )
    if stored:
        session.execute(insert(AppEvent), stored)
    return wire.EventsResponse(results=results)


def in_app_messages(session: Session, app_id: str, endpoint_id: str) -> wire.InAppMessagesResponse:
    """Herald runs no in-app campaigns, so there are none to show; an SDK asking gets the
    empty list Pinpoint gave an endpoint with nothing to display."""
    get_application(session, app_id)
    del endpoint_id
    return wire.InAppMessagesResponse(in_app_message_campaigns=[])
