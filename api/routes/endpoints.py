"""Endpoints: Update (one and batch), Get, Delete, and a user's endpoints."""

from __future__ import annotations

from typing import Any

from api.auth import Authed, Call
from api.routing import pinpoint_router
from worker import wire
from worker.core.errors import BadRequest
from worker.management import endpoints

router = pinpoint_router()


def _accepted(call: Call) -> dict[str, str]:
    return wire.MessageBody(message="Accepted", request_id=call.request_id).to_wire()

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
        endpoint = endpoints.get_endpoint(session, app_id, endpoint_id)
        return endpoints.endpoint_response(endpoint).to_wire()


@router.delete("/v1/apps/{app_id}/endpoints/{endpoint_id}", status_code=202)
def delete_endpoint(
    app_id: str, endpoint_id: str, call: Authed
) -> dict[str, Any]:
    with call.herald.transaction() as session:
        endpoint = endpoints.delete_endpoint(session, app_id, endpoint_id)
        return endpoints.endpoint_response(endpoint).to_wire()


@router.get("/v1/apps/{app_id}/users/{user_id}")
def get_user_endpoints(
    app_id: str, user_id: str, call: Authed
) -> dict[str, Any]:
    with call.herald.transaction() as session:
        found = endpoints.user_endpoints(session, app_id, user_id)
        return wire.EndpointsResponse(
            item=[endpoints.endpoint_response(e) for e in found]
        ).to_wire()


@router.delete("/v1/apps/{app_id}/users/{user_id}", status_code=202)
def delete_user_endpoints(
    app_id: str, user_id: str, call: Authed
) -> dict[str, Any]:
    with call.herald.transaction() as session:
        found = endpoints.delete_user_endpoints(session, app_id, user_id)
        return wire.EndpointsResponse(
            item=[endpoints.endpoint_response(e) for e in found]
        ).to_wire()
