"""Applications: CreateApp, GetApps, GetApp, DeleteApp."""

from __future__ import annotations

from typing import Any

from fastapi import Request

from api.auth import Authed
from api.routing import pinpoint_router
from worker import wire
from worker.core.errors import Forbidden
from worker.management import applications

router = pinpoint_router()


@router.post("/v1/apps", status_code=201)
def create_app_route(call: Authed) -> dict[str, Any]:
    if call.principal.app_ids is not None:
        raise Forbidden("The access key is scoped to applications and cannot create one")
    request, _ = call.parse(wire.CreateApplicationRequest)
    with call.herald.transaction() as session:
        app = applications.create_application(session, request)
        return applications.application_response(app, call.region).to_wire()


@router.get("/v1/apps")
def get_apps(
    request: Request, call: Authed
) -> dict[str, Any]:
    with call.herald.transaction() as session:
        apps, token = applications.list_applications(
            session, request.query_params.get("page-size"), request.query_params.get("token"),
            call.principal.app_ids,
        )
        items = [applications.application_response(a, call.region) for a in apps]
    return wire.ApplicationsResponse(item=items, next_token=token or None).to_wire()


@router.get("/v1/apps/{app_id}")
def get_app(app_id: str, call: Authed) -> dict[str, Any]:
    with call.herald.transaction() as session:
        app = applications.get_application(session, app_id)
        return applications.application_response(app, call.region).to_wire()


@router.delete("/v1/apps/{app_id}")
def delete_app(app_id: str, call: Authed) -> dict[str, Any]:
    with call.herald.transaction() as session:
        app = applications.delete_application(session, app_id)
        response = applications.application_response(app, call.region).to_wire()
    call.herald.channel_cache.clear()
    return response


@router.get("/v1/apps/{app_id}/settings")
def get_application_settings(app_id: str, call: Authed) -> dict[str, Any]:
    with call.herald.transaction() as session:
        app = applications.get_application(session, app_id)
        return applications.settings_response(app).to_wire()


@router.put("/v1/apps/{app_id}/settings")
def update_application_settings(app_id: str, call: Authed) -> dict[str, Any]:
    request, _ = call.parse(wire.WriteApplicationSettingsRequest)
    with call.herald.transaction() as session:
        app = applications.update_settings(session, app_id, request)
        return applications.settings_response(app).to_wire()
