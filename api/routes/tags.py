"""Tags: TagResource, UntagResource, ListTagsForResource on application ARNs.

The ARN is one percent-encoded path label (api.routing); the app it names is authorised
like every app route's ``{app_id}``.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response

from api.auth import Authed, Call
from api.routing import pinpoint_router
from worker import wire
from worker.core.errors import BadRequest
from worker.management import applications

router = pinpoint_router()


def _app_id(call: Call, resource_arn: str) -> str:
    app_id = applications.app_id_of_arn(resource_arn, call.region)
    call.authorize(app_id)
    return app_id


@router.get("/v1/tags/{resource_arn}")
def list_tags_for_resource(resource_arn: str, call: Authed) -> dict[str, Any]:
    app_id = _app_id(call, resource_arn)
    with call.herald.transaction() as session:
        app = applications.get_application(session, app_id)
        return wire.TagsModel(tags=dict(app.tags or {})).to_wire()


@router.post("/v1/tags/{resource_arn}", status_code=204)
def tag_resource(resource_arn: str, call: Authed) -> Response:
    app_id = _app_id(call, resource_arn)
    request, _ = call.parse(wire.TagsModel)
    with call.herald.transaction() as session:
        applications.tag_application(session, app_id, request.tags)
    return Response(status_code=204)


@router.delete("/v1/tags/{resource_arn}", status_code=204)
def untag_resource(resource_arn: str, request: Request, call: Authed) -> Response:
    app_id = _app_id(call, resource_arn)
    keys = request.query_params.getlist("tagKeys")
    if not keys:
        raise BadRequest("tagKeys is required: the keys of the tags to remove")
    with call.herald.transaction() as session:
        applications.untag_application(session, app_id, keys)
    return Response(status_code=204)
