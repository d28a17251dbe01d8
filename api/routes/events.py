"""Events from client SDKs: PutEvents, and the in-app messages an endpoint would show."""

from __future__ import annotations

from typing import Any

from api.auth import Authed
from api.routing import pinpoint_router
from worker import wire
from worker.intake.events import in_app_messages, put_events

router = pinpoint_router()


@router.post("/v1/apps/{app_id}/events", status_code=202)
def put_events_route(app_id: str, call: Authed) -> dict[str, Any]:
    request, _ = call.parse(wire.EventsRequest)
    with call.herald.transaction() as session:
        return put_events(session, app_id, request).to_wire()


@router.get("/v1/apps/{app_id}/endpoints/{endpoint_id}/inappmessages")
def get_in_app_messages(app_id: str, endpoint_id: str, call: Authed) -> dict[str, Any]:
    with call.herald.transaction() as session:
        return in_app_messages(session, app_id, endpoint_id).to_wire()
