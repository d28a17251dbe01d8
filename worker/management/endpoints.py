"""Endpoints: the addresses (device tokens, e-mail addresses, phone numbers) of an app's users.

Limits follow Pinpoint's published quotas, checked before anything is written so a rejected
request changes nothing.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from worker import wire
from worker.core.db import utcnow
from worker.core.errors import BadRequest, NotFound
from worker.core.models import Endpoint, endpoint_key
from worker.management.applications import get_application, iso

MAX_ENDPOINTS_PER_USER = 15
MAX_BATCH_ITEMS = 100
MAX_ATTRIBUTES = 250  # Attributes + Metrics + UserAttributes together
MAX_ATTRIBUTE_NAME = 50
MAX_ATTRIBUTE_VALUE = 100
MAX_ATTRIBUTE_VALUES = 50
MAX_ENDPOINT_ID = 128
MAX_USER_ID = 256
MAX_ADDRESS = 1024
ENDPOINT_STATUSES = ("ACTIVE", "INACTIVE")
OPT_OUT_VALUES = ("ALL", "NONE")
_FORBIDDEN_ID_CHARS = re.compile(r"[${}]")
_MERGED_MAPS = ("Attributes", "Metrics")


def _check_id(endpoint_id: str | None) -> str:
    if not endpoint_id:
        raise BadRequest("Endpoint Id is required")
    if len(endpoint_id) > MAX_ENDPOINT_ID:
        raise BadRequest(f"Endpoint Id must be at most {MAX_ENDPOINT_ID} characters")
    if _FORBIDDEN_ID_CHARS.search(endpoint_id):
        raise BadRequest("Endpoint Id must not contain '$', '{' or '}'")
    return endpoint_id


def _check_attribute_map(name: str, values: dict[str, Any] | None) -> int:
    if not values:
        return 0
    for key, value in values.items():
        if not key or len(key) > MAX_ATTRIBUTE_NAME:
            raise BadRequest(
                f"{name} name '{key[:60]}' must be 1 to {MAX_ATTRIBUTE_NAME} characters"
            )
        if isinstance(value, list):
            if len(value) > MAX_ATTRIBUTE_VALUES:
                raise BadRequest(f"{name}.{key} has more than {MAX_ATTRIBUTE_VALUES} values")
            for item in value:
                if len(item) > MAX_ATTRIBUTE_VALUE:
                    raise BadRequest(
                        f"{name}.{key} has a value longer than {MAX_ATTRIBUTE_VALUE} characters"
                    )
    return len(values)


def _validate(request: wire.EndpointRequest) -> None:
    count = _check_attribute_map("Attributes", request.attributes)
    count += _check_attribute_map("Metrics", request.metrics)
    if request.user is not None:
        count += _check_attribute_map("UserAttributes", request.user.user_attributes)
        if request.user.user_id is not None and len(request.user.user_id) > MAX_USER_ID:
            raise BadRequest(f"User.UserId must be at most {MAX_USER_ID} characters")
    if count > MAX_ATTRIBUTES:
        raise BadRequest(
            f"An endpoint may have at most {MAX_ATTRIBUTES} Attributes, Metrics and "
            f"UserAttributes together; this one has {count}"
        )
    if request.endpoint_status is not None and request.endpoint_status not in ENDPOINT_STATUSES:
        raise BadRequest("EndpointStatus must be ACTIVE or INACTIVE")
    if request.opt_out is not None and request.opt_out not in OPT_OUT_VALUES:
        raise BadRequest("OptOut must be ALL or NONE")
    if request.address is not None and len(request.address) > MAX_ADDRESS:
        raise BadRequest(f"Address must be at most {MAX_ADDRESS} characters")


def _check_stored_quota(endpoint_id: str, document: dict[str, Any]) -> None:
    """The 250-attribute quota holds for the endpoint as stored: updates merge their maps into
    what is there, so a request within the quota can still take the endpoint over it."""
    count = sum(len(document.get(member) or {}) for member in _MERGED_MAPS)
    count += len((document.get("User") or {}).get("UserAttributes") or {})
    if count > MAX_ATTRIBUTES:
        raise BadRequest(
            f"Endpoint {endpoint_id[:MAX_ENDPOINT_ID]} would have {count} Attributes, Metrics "
            f"and UserAttributes together; an endpoint may have at most {MAX_ATTRIBUTES}"
        )


def _apply(endpoint: Endpoint, request: wire.EndpointRequest) -> None:
    """Merge an update into an endpoint the way Pinpoint does: given members replace, maps
    merge key by key."""
    document = dict(endpoint.document or {})
    if request.channel_type is not None:
        endpoint.channel_type = request.channel_type.value
    if request.address is not None:
        if request.address != endpoint.address and endpoint.status == "INACTIVE":
            # A new address revives an endpoint that was deactivated for a dead token.
            endpoint.status = "ACTIVE"
        endpoint.address = request.address
    if request.endpoint_status is not None:
        endpoint.status = request.endpoint_status
    if request.opt_out is not None:
        endpoint.opt_out = request.opt_out
    for member in _MERGED_MAPS:
        given = getattr(request, member.lower())
        if given is not None:
            document[member] = {**document.get(member, {}), **given}
    for member, value in (("Demographic", request.demographic), ("Location", request.location)):
        if value is not None:
            document[member] = {**document.get(member, {}), **value.to_wire()}
    if request.user is not None:
        user = dict(document.get("User", {}))
        if request.user.user_id is not None:
            endpoint.user_id = request.user.user_id or None
        if request.user.user_attributes is not None:
            user["UserAttributes"] = {
                **user.get("UserAttributes", {}),
                **request.user.user_attributes,
            }
        document["User"] = user
    if request.effective_date is not None:
        document["EffectiveDate"] = request.effective_date
    if request.request_id is not None:
        document["RequestId"] = request.request_id
    endpoint.document = document


def _check_user_quota(session: Session, app_id: str, planned: dict[str, set[str]]) -> None:
    """No user may end up with more than 15 endpoints (Pinpoint's quota)."""
    if not planned:
        return
    rows = session.execute(
        select(Endpoint.user_id, Endpoint.id_key).where(
            Endpoint.app_id == app_id, Endpoint.user_id.in_(planned)
        )
    )
    existing: dict[str, set[str]] = {}
    for user_id, endpoint_id in rows:
        if user_id is not None:
            existing.setdefault(user_id, set()).add(endpoint_id)
    for user_id, new_ids in planned.items():
        if len(existing.get(user_id, set()) | new_ids) > MAX_ENDPOINTS_PER_USER:
            raise BadRequest(
                f"User {user_id} would have more than {MAX_ENDPOINTS_PER_USER} endpoints"
            )


def upsert_endpoints(
    session: Session, app_id: str, items: Sequence[tuple[str, wire.EndpointRequest]]
) -> None:
    """Create or update endpoints; all are validated before any is written."""
    get_application(session, app_id)
    for endpoint_id, request in items:
        _check_id(endpoint_id)
        _validate(request)
    # Keyed by the folded id: "Ep-1" and "ep-1" update one endpoint, in the batch as in
    # the table, and it keeps the case it was created with.
    keys = [endpoint_key(endpoint_id) for endpoint_id, _ in items]
    current = {
        e.id_key: e
        for e in session.scalars(
            select(Endpoint).where(Endpoint.app_id == app_id, Endpoint.id_key.in_(keys))
        )
    }
    now = utcnow()
    planned_users: dict[str, set[str]] = {}
    staged: list[Endpoint] = []
    for endpoint_id, request in items:
        key = endpoint_key(endpoint_id)
        endpoint = current.get(key)
        if endpoint is None:
            endpoint = Endpoint(
                app_id=app_id,
                id=endpoint_id,
                id_key=key,
                status="ACTIVE",
                opt_out="NONE",
                document={},
                created_at=now,
            )
            current[key] = endpoint
        _apply(endpoint, request)
        _check_stored_quota(endpoint_id, endpoint.document)
        if endpoint.channel_type is None:
            raise BadRequest(f"Endpoint {endpoint_id}: ChannelType is required")
        endpoint.updated_at = now
        if endpoint.user_id:
            planned_users.setdefault(endpoint.user_id, set()).add(key)
        if endpoint not in staged:
            staged.append(endpoint)
    with session.no_autoflush:
        _check_user_quota(session, app_id, planned_users)
    session.add_all(staged)
    session.flush()


def endpoint_response(endpoint: Endpoint) -> wire.EndpointResponse:
    document = endpoint.document or {}
    user = dict(document.get("User", {}))
    if endpoint.user_id:
        user["UserId"] = endpoint.user_id
    return wire.EndpointResponse(
        address=endpoint.address,
        application_id=endpoint.app_id,
        attributes=document.get("Attributes", {}),
        channel_type=endpoint.channel_type,
        cohort_id=str(zlib.crc32(endpoint.id.encode()) % 100),
        creation_date=iso(endpoint.created_at),
        demographic=document.get("Demographic", {}),
        effective_date=document.get("EffectiveDate", iso(endpoint.updated_at)),
        endpoint_status=endpoint.status,
        id=endpoint.id,
        location=document.get("Location", {}),
        metrics=document.get("Metrics", {}),
        opt_out=endpoint.opt_out,
        request_id=document.get("RequestId"),
        user=user,
    )


def get_endpoint(session: Session, app_id: str, endpoint_id: str) -> Endpoint:
    get_application(session, app_id)
    endpoint = session.scalar(select(Endpoint).where(
        Endpoint.app_id == app_id, Endpoint.id_key == endpoint_key(endpoint_id)))
    if endpoint is None:
        raise NotFound("Resource not found")
    return endpoint


def delete_endpoint(session: Session, app_id: str, endpoint_id: str) -> Endpoint:
    endpoint = get_endpoint(session, app_id, endpoint_id)
    session.delete(endpoint)
    session.flush()
    return endpoint


def user_endpoints(session: Session, app_id: str, user_id: str) -> list[Endpoint]:
    get_application(session, app_id)
    endpoints = list(
        session.scalars(
            select(Endpoint)
            .where(Endpoint.app_id == app_id, Endpoint.user_id == user_id)
            .order_by(Endpoint.id)
        )
    )
    if not endpoints:
        raise NotFound("Resource not found")
    return endpoints


def delete_user_endpoints(session: Session, app_id: str, user_id: str) -> list[Endpoint]:
    endpoints = user_endpoints(session, app_id, user_id)
    session.execute(
        delete(Endpoint).where(Endpoint.app_id == app_id, Endpoint.user_id == user_id)
    )
    return endpoints


def endpoints_of_users(
    session: Session, app_id: str, user_ids: Iterable[str]
) -> dict[str, list[Any]]:
    """Every endpoint of each user, ordered by endpoint id, in one query. Rows carry only
    what planning a send needs (id, channel_type, address, status, opt_out), not documents."""
    found: dict[str, list[Any]] = {}
    ids = list(user_ids)
    if not ids:
        return found
    query = (
        select(Endpoint.user_id, Endpoint.id, Endpoint.channel_type, Endpoint.address,
               Endpoint.status, Endpoint.opt_out)
        .where(Endpoint.app_id == app_id, Endpoint.user_id.in_(ids))
        .order_by(Endpoint.user_id, Endpoint.id)
    )
    for endpoint in session.execute(query):
        found.setdefault(endpoint.user_id, []).append(endpoint)
    return found

