"""Accepting a send: resolve recipients, decide what needs no provider, persist the plan.

The API calls :func:`accept_users_request` inside one transaction. Every recipient gets its
``deliveries`` row before the API answers, so Postgres knows all outstanding work even if the
broker loses it (the recovery sweep re-enqueues from these rows). Decisions that need no
provider — opted out, duplicate, channel not enabled, no message for the channel — are final
here; the rest are pending and are enqueued in batches after commit.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from worker import wire
from worker.core.addresses import check_email_address, is_e164, normalize_phone
from worker.core.config import Settings
from worker.core.db import utcnow
from worker.core.errors import BadRequest, NotFound, TooManyRequests
from worker.core.models import Delivery, Endpoint, SendRequest, endpoint_key
from worker.core.vocabulary import ADDRESS_PREFIX, SENDABLE_TYPES, ChannelType, DeliveryStatus
from worker.delivery.render_limits import check_substitutions
from worker.delivery.rendering import (
    dedup_key,
    has_message,
)
from worker.management.applications import get_application
from worker.management.channels import ChannelCache
from worker.management.endpoints import MAX_ENDPOINT_ID, MAX_USER_ID, endpoints_of_users
from worker.management.senders import check_message_senders

MAX_USERS = 100
MAX_RECIPIENTS = 100  # SendMessages: addresses + endpoints per request
# As an endpoint's Address; and an address is part of a key in a unique btree index
# (deliveries.recipient), whose entries cannot exceed 2704 bytes.
MAX_TOKEN = 1024
MAX_TRACE_ID = 256  # message_requests.trace_id
BATCH_SIZE = 100
NO_ENDPOINTS = "No endpoints found for userId."
_DELIVERY_NAMESPACE = uuid.UUID("6f1c1f3e-2f5d-4c57-9b1e-8f3f6b7c0d11")


def delivery_uuid(request_id: str, recipient: str) -> str:
    """A UUID stable per (request, recipient): the APNs apns-id, the e-mail Message-ID."""
    return str(uuid.uuid5(_DELIVERY_NAMESPACE, f"{request_id}/{recipient}"))


@dataclass
class Accepted:
    request_id: str
    total: int
    pending: list[int] = field(default_factory=list)
    planned: list[dict[str, Any]] = field(default_factory=list)  # the rows as inserted

    def batches(self, size: int = BATCH_SIZE) -> list[list[int]]:
        return [self.pending[i : i + size] for i in range(0, len(self.pending), size)]

    def rows_as_planned(self) -> list[SimpleNamespace]:
        """The result rows as they were committed, for an answer when the database cannot
        be read again: decided outcomes as decided, the rest in progress."""
        return [SimpleNamespace(message_id=None, updated_token=None, **row)
                for row in self.planned]


@dataclass
class _Plan:
    rows: list[dict[str, Any]] = field(default_factory=list)
    seen: set[tuple[str, str]] = field(default_factory=set)


def _check_ids(
    trace_id: str | None, user_ids: Iterable[str] = (), endpoint_ids: Iterable[str] = ()
) -> None:
    """Ids that are stored in bounded columns are checked first: too long is a 400."""
    if trace_id is not None and len(trace_id) > MAX_TRACE_ID:
        raise BadRequest(f"TraceId must be at most {MAX_TRACE_ID} characters")
    if any(len(user_id) > MAX_USER_ID for user_id in user_ids):
        raise BadRequest(f"A user id must be at most {MAX_USER_ID} characters")
    if any(len(endpoint_id) > MAX_ENDPOINT_ID for endpoint_id in endpoint_ids):
        raise BadRequest(f"An endpoint id must be at most {MAX_ENDPOINT_ID} characters")


def check_inflight(session: Session, app_id: str, adding: int, cap: int) -> None:
    """Refuse (429) a send that would take the app past ``cap`` unfinished deliveries, so one
    tenant cannot fill the workers' queue. A send that adds no pending delivery always passes.

    One COUNT on ``ix_deliveries_app_id_unfinished``. Concurrent intakes for one app are not
    serialised, so the cap is soft: it can be passed by at most what those in-flight intakes
    add at the same instant."""
    if adding == 0:
        return
    inflight = session.scalar(
        select(func.count()).select_from(Delivery).where(
            Delivery.app_id == app_id, ~Delivery.final
        )
    ) or 0
    if inflight + adding > cap:
        raise TooManyRequests(
            f"Application {app_id} has {inflight} deliveries in flight; this request would add "
            f"{adding}, over the limit of {cap}. Retry when some have finished."
        )


def _check_request(
    config: wire.DirectMessageConfiguration,
    templates: wire.TemplateConfiguration | None,
    recipients: Iterable[wire.EndpointSendConfiguration],
) -> None:
    check_substitutions(config, recipients)
    if templates is not None and templates.names():
        # Herald has no template store; Pinpoint answers an unknown template with 404.
        raise NotFound(f"Template {templates.names()[0]} not found")


def _plan_recipient(
    plan: _Plan,
    channel_type: str,
    address: str | None,
    opt_out: str,
    config: wire.DirectMessageConfiguration,
    overrides: wire.EndpointSendConfiguration | None,
    enabled: Mapping[str, bool],
) -> tuple[DeliveryStatus | None, int | None, str | None]:
    """The final outcome decided without a provider, or (None, None, None) when pending."""
    if opt_out == "ALL":
        return DeliveryStatus.OPT_OUT, 400, "Endpoint has opted out of all messages."
    if channel_type not in SENDABLE_TYPES:
        return (DeliveryStatus.PERMANENT_FAILURE, 400,
                f"Channel type {channel_type} is not supported.")
    if not address:
        return DeliveryStatus.PERMANENT_FAILURE, 400, "Endpoint has no address."
    key = dedup_key(channel_type, address)
    if key in plan.seen:
        return DeliveryStatus.DUPLICATE, 400, "Duplicate address in this request."
    plan.seen.add(key)
    if not enabled.get(channel_type, False):
        return (DeliveryStatus.PERMANENT_FAILURE, 400,
                f"The {channel_type} channel is not enabled for this application.")
    if not has_message(config, channel_type, overrides):
        return (DeliveryStatus.PERMANENT_FAILURE, 400,
                f"No message was provided for the {channel_type} channel.")
    return None, None, None


def _row(
    request_id: str,
    app_id: str,
    recipient: str,
    *,
    now: datetime,
    user_id: str | None = None,
    endpoint_id: str | None = None,
    channel_type: str | None = None,
    address: str | None = None,
    outcome: tuple[DeliveryStatus | None, int | None, str | None] = (None, None, None),
) -> dict[str, Any]:
    status, code, message = outcome
    final = status is not None
    return {
        "request_id": request_id,
        "app_id": app_id,
        "recipient": recipient,
        "user_id": user_id,
        "endpoint_id": endpoint_id,
        "channel_type": channel_type,
        "address": address,
        "delivery_status": status.value if status else None,
        "status_code": code,
        "status_message": message,
        "attempts": 0,
        "final": final,
        "next_attempt_at": None if final else now,
        "created_at": now,
        "updated_at": now,
        "final_at": now if final else None,
    }


def _persist(
    session: Session, request: SendRequest, rows: list[dict[str, Any]],
    max_inflight: int | None = None,
) -> Accepted:
    if max_inflight is not None:
        pending = sum(1 for row in rows if not row["final"])
        check_inflight(session, request.app_id, pending, max_inflight)
    session.add(request)
    session.flush()
    accepted = Accepted(request_id=request.id, total=len(rows), planned=rows)
    if rows:
        # One multi-row INSERT; ids come back for the pending rows only.
        result = session.execute(
            insert(Delivery).returning(Delivery.id, Delivery.final, sort_by_parameter_order=True),
            rows,
        )
        accepted.pending = [row_id for row_id, final in result if not final]
    return accepted


def accept_users_request(
    session: Session,
    app_id: str,
    request: wire.SendUsersMessageRequest,
    payload: dict[str, Any],
    channels: ChannelCache,
    settings: Settings,
) -> Accepted:
    if not 1 <= len(request.users) <= MAX_USERS:
        raise BadRequest(f"Users must name from 1 to {MAX_USERS} user ids")
    _check_ids(request.trace_id, user_ids=request.users)
    _check_request(request.message_configuration, request.template_configuration,
                   request.users.values())
    get_application(session, app_id)
    configs = channels.for_app(session, app_id)
    check_message_senders(request.message_configuration, configs, settings)
    enabled = {t: c.enabled for t, c in configs.items()}
    request_id = str(uuid.uuid4())
    now = utcnow()
    by_user = endpoints_of_users(session, app_id, request.users)
    plan = _Plan()
    for user_id, overrides in request.users.items():
        endpoints = [e for e in by_user.get(user_id, []) if e.status != "INACTIVE"]
        if not endpoints:
            plan.rows.append(_row(
                request_id, app_id, f"user:{user_id}", now=now, user_id=user_id, address="",
                outcome=(DeliveryStatus.PERMANENT_FAILURE, 400, NO_ENDPOINTS),
            ))
            continue
        for endpoint in endpoints:
            outcome = _plan_recipient(
                plan, endpoint.channel_type or "", endpoint.address, endpoint.opt_out,
                request.message_configuration, overrides, enabled,
            )
            plan.rows.append(_row(
                request_id, app_id, endpoint.id, now=now, user_id=user_id,
                endpoint_id=endpoint.id, channel_type=endpoint.channel_type,
                address=endpoint.address, outcome=outcome,
            ))
    message_request = SendRequest(
        id=request_id, app_id=app_id, kind="users", payload=payload,
        trace_id=request.trace_id, recipients=len(plan.rows), created_at=now,
    )
    return _persist(session, message_request, plan.rows, settings.max_inflight_sends_per_app)


def check_address(channel_type: str, address: str) -> str | None:
    """Why an address cannot be one of this channel's, or None when it can."""
    if channel_type == ChannelType.EMAIL:
        try:
            check_email_address(address)
        except ValueError as exc:
            return str(exc)
        return None
    if channel_type in (ChannelType.SMS, ChannelType.VOICE):
        if not is_e164(normalize_phone(address)):
            return f"'{address[:40]}' is not a phone number in E.164 form (+15555550100)"
        return None
    if (not address or len(address) > MAX_TOKEN or not address.isascii()
            or any(c.isspace() for c in address)):
        return f"a device token must be 1 to {MAX_TOKEN} ASCII characters with no spaces"
    return None


def accept_messages_request(
    session: Session,
    app_id: str,
    request: wire.MessageRequest,
    payload: dict[str, Any],
    channels: ChannelCache,
    settings: Settings,
    *,
    sealed_substitutions: bytes | None = None,
) -> Accepted:
    """SendMessages: the same plan for addresses and endpoint ids (one pipeline, two intakes).
    ``sealed_substitutions`` (encrypted, see worker.intake.otp) are stored beside the payload,
    never in it."""
    addresses = request.addresses or {}
    endpoint_configs = request.endpoints or {}
    total = len(addresses) + len(endpoint_configs)
    if not 1 <= total <= MAX_RECIPIENTS:
        raise BadRequest(
            f"Addresses and Endpoints together must name from 1 to {MAX_RECIPIENTS} recipients"
        )
    _check_ids(request.trace_id, endpoint_ids=endpoint_configs)
    for address, config in addresses.items():
        if config.channel_type is None:
            raise BadRequest(f"Addresses.{address[:60]}.ChannelType is required")
        problem = check_address(config.channel_type.value, address)
        if problem is not None:
            raise BadRequest(f"Addresses.{address[:60]}: {problem}")
    _check_request(request.message_configuration, request.template_configuration,
                   [*addresses.values(), *endpoint_configs.values()])
    get_application(session, app_id)
    configs = channels.for_app(session, app_id)
    check_message_senders(request.message_configuration, configs, settings)
    enabled = {t: c.enabled for t, c in configs.items()}
    request_id = str(uuid.uuid4())
    now = utcnow()
    plan = _Plan()
    for address, address_config in addresses.items():
        channel_type = address_config.channel_type.value if address_config.channel_type else ""
        outcome = _plan_recipient(
            plan, channel_type, address, "NONE", request.message_configuration,
            address_config, enabled,
        )
        plan.rows.append(_row(request_id, app_id, f"{ADDRESS_PREFIX}{address}", now=now,
                              channel_type=channel_type, address=address, outcome=outcome))
    # Endpoint ids are case-insensitive: the answer is keyed by the id as given, the row
    # names the endpoint as stored (workers read its document by that id).
    found = {
        e.id_key: e for e in session.scalars(select(Endpoint).where(
            Endpoint.app_id == app_id,
            Endpoint.id_key.in_([endpoint_key(i) for i in endpoint_configs])))
    } if endpoint_configs else {}
    for endpoint_id, overrides in endpoint_configs.items():
        endpoint = found.get(endpoint_key(endpoint_id))
        if endpoint is None:
            outcome = (DeliveryStatus.PERMANENT_FAILURE, 404, "Endpoint not found.")
        elif endpoint.status == "INACTIVE":
            outcome = (DeliveryStatus.PERMANENT_FAILURE, 400, "Endpoint is inactive.")
        else:
            outcome = _plan_recipient(
                plan, endpoint.channel_type or "", endpoint.address, endpoint.opt_out,
                request.message_configuration, overrides, enabled,
            )
        plan.rows.append(_row(
            request_id, app_id, endpoint_id, now=now,
            user_id=endpoint.user_id if endpoint else None,
            endpoint_id=endpoint.id if endpoint else endpoint_id,
            channel_type=endpoint.channel_type if endpoint else None,
            address=endpoint.address if endpoint else "", outcome=outcome,
        ))
    message_request = SendRequest(
        id=request_id, app_id=app_id, kind="messages", payload=payload,
        trace_id=request.trace_id, recipients=len(plan.rows), created_at=now,
        sealed_substitutions=sealed_substitutions,
    )
    return _persist(session, message_request, plan.rows, settings.max_inflight_sends_per_app)
