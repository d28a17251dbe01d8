"""Channels: each application's configuration of a delivery channel.

Secret members (keys, certificates, service JSON, client secrets) are encrypted at rest and
never returned; responses only say ``HasCredential`` / ``HasTokenKey``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from worker import wire
from worker.core import crypto
from worker.core.config import Settings
from worker.core.db import utcnow
from worker.core.errors import BadRequest, NotFound
from worker.core.models import Channel
from worker.core.vocabulary import APNS_TYPES, CHANNELS, ChannelConfig, ChannelType, Family
from worker.management.applications import get_application, iso
from worker.providers.base import InvalidCredentials
from worker.providers.checks import check_channel_credentials


@dataclass(frozen=True)
class ChannelKind:
    path: str  # the URL segment: /v1/apps/{id}/channels/<path>
    channel_type: ChannelType
    request_model: type[wire.WireModel]
    secret_members: frozenset[str]


_APNS_SECRETS = frozenset({"TokenKey", "Certificate", "PrivateKey"})

CHANNEL_KINDS: dict[str, ChannelKind] = {
    kind.path: kind
    for kind in (
        ChannelKind("apns", ChannelType.APNS, wire.APNSChannelRequest, _APNS_SECRETS),
        ChannelKind(
            "apns_sandbox", ChannelType.APNS_SANDBOX, wire.APNSChannelRequest, _APNS_SECRETS
        ),
        ChannelKind("apns_voip", ChannelType.APNS_VOIP, wire.APNSChannelRequest, _APNS_SECRETS),
        ChannelKind(
            "apns_voip_sandbox", ChannelType.APNS_VOIP_SANDBOX, wire.APNSChannelRequest,
            _APNS_SECRETS,
        ),
        ChannelKind(
            "gcm", ChannelType.GCM, wire.GCMChannelRequest, frozenset({"ApiKey", "ServiceJson"})
        ),
        ChannelKind(
            "baidu", ChannelType.BAIDU, wire.BaiduChannelRequest, frozenset({"ApiKey", "SecretKey"})
        ),
        ChannelKind("adm", ChannelType.ADM, wire.ADMChannelRequest, frozenset({"ClientSecret"})),
        ChannelKind("email", ChannelType.EMAIL, wire.EmailChannelRequest, frozenset()),
        ChannelKind("sms", ChannelType.SMS, wire.SMSChannelRequest, frozenset()),
        ChannelKind("voice", ChannelType.VOICE, wire.VoiceChannelRequest, frozenset()),
    )
}
KIND_BY_TYPE: dict[str, ChannelKind] = {kind.channel_type: kind for kind in CHANNEL_KINDS.values()}


def _check_email(values: dict[str, Any], settings: Settings) -> None:
    from worker.core.addresses import check_email_address
    from worker.management.senders import check_channel_sender

    try:
        check_email_address(values["FromAddress"])
    except ValueError as exc:
        raise BadRequest(f"FromAddress: {exc}") from None
    check_channel_sender(values, settings)


def _validate(kind: ChannelKind, values: dict[str, Any], settings: Settings) -> None:
    """The channel's credentials are checked by the provider that will use them; the e-mail
    sender identity is Herald's own rule (``senders``)."""
    if kind.channel_type == ChannelType.EMAIL:
        _check_email(values, settings)
        return
    try:
        check_channel_credentials(kind.channel_type, values)
    except InvalidCredentials as exc:
        raise BadRequest(str(exc)) from None


def update_channel(
    session: Session, app_id: str, path: str, body: dict[str, Any], settings: Settings
) -> Channel:
    kind = CHANNEL_KINDS[path]
    get_application(session, app_id)
    try:
        request = kind.request_model.model_validate(body)
    except ValidationError as exc:
        from worker.wire.validation import describe

        raise BadRequest(describe(exc)) from None
    given = request.to_wire()
    enabled = given.pop("Enabled", None)
    channel = session.get(Channel, (app_id, kind.channel_type))
    now = utcnow()
    old_secrets = (
        crypto.decrypt_json(channel.secrets, settings) if channel and channel.secrets else {}
    )
    stored = {**(channel.settings if channel else {}), **{
        k: v for k, v in given.items() if k not in kind.secret_members
    }}
    secrets = {**old_secrets, **{k: v for k, v in given.items() if k in kind.secret_members}}
    _validate(kind, {**stored, **secrets}, settings)
    if channel is None:
        channel = Channel(
            app_id=app_id,
            channel_type=kind.channel_type,
            enabled=True if enabled is None else enabled,
            version=1,
            created_at=now,
        )
        session.add(channel)
    else:
        channel.version += 1
        if enabled is not None:
            channel.enabled = enabled
    channel.settings = stored
    channel.secrets = crypto.encrypt_json(secrets, settings) if secrets else None
    channel.updated_at = now
    session.flush()
    return channel


def get_channel(session: Session, app_id: str, path: str) -> Channel:
    kind = CHANNEL_KINDS[path]
    get_application(session, app_id)
    channel = session.get(Channel, (app_id, kind.channel_type))
    if channel is None:
        raise NotFound("Resource not found")
    return channel


def delete_channel(session: Session, app_id: str, path: str) -> Channel:
    channel = get_channel(session, app_id, path)
    session.delete(channel)
    session.flush()
    return channel


def list_channels(session: Session, app_id: str) -> list[Channel]:
    get_application(session, app_id)
    return list(session.scalars(select(Channel).where(Channel.app_id == app_id)))


def channel_response(
    channel: Channel, *, secrets_present: frozenset[str]
) -> wire.ChannelResponse:
    kind = KIND_BY_TYPE[channel.channel_type]
    settings = channel.settings or {}

    def stored(member: str) -> str | None:
        return settings.get(member) or None  # the channel's non-secret member, if set

    extra: dict[str, Any] = {}
    if kind.channel_type in APNS_TYPES:
        extra = {
            "has_token_key": "TokenKey" in secrets_present,
            "default_authentication_method": stored("DefaultAuthenticationMethod")
            or ("TOKEN" if "TokenKey" in secrets_present else "CERTIFICATE"),
        }
    elif kind.channel_type == ChannelType.GCM:
        extra = {
            "has_fcm_service_credentials": "ServiceJson" in secrets_present,
            "default_authentication_method": stored("DefaultAuthenticationMethod")
            or ("TOKEN" if "ServiceJson" in secrets_present else "KEY"),
        }
    elif kind.channel_type == ChannelType.BAIDU:
        # The model requires Credential; Herald never echoes a secret, so it is masked.
        extra = {"credential": "****"}
    elif kind.channel_type == ChannelType.EMAIL:
        extra = {
            "from_address": stored("FromAddress"),
            "identity": stored("Identity"),
            "configuration_set": stored("ConfigurationSet"),
            "role_arn": stored("RoleArn"),
            "orchestration_sending_role_arn": stored("OrchestrationSendingRoleArn"),
            "messages_per_second": 100,
        }
    elif kind.channel_type == ChannelType.SMS:
        extra = {
            "sender_id": stored("SenderId"),
            "short_code": stored("ShortCode"),
            "promotional_messages_per_second": 20,
            "transactional_messages_per_second": 20,
        }
    return wire.ChannelResponse(
        application_id=channel.app_id,
        creation_date=iso(channel.created_at),
        enabled=channel.enabled,
        has_credential=bool(secrets_present)
        or CHANNELS[kind.channel_type].family is not Family.PUSH,
        id=kind.path,
        is_archived=False,
        last_modified_by="herald",
        last_modified_date=iso(channel.updated_at),
        platform=kind.channel_type,
        version=channel.version,
        **extra,
    )


def secret_names(channel: Channel, settings: Settings) -> frozenset[str]:
    if not channel.secrets:
        return frozenset()
    return frozenset(crypto.decrypt_json(channel.secrets, settings))


class ChannelCache:
    """Per-process cache of decrypted channel configurations.

    Workers look channels up for every batch; a short time-to-live keeps updates visible
    within seconds without a query and a decryption per message.
    """

    def __init__(self, settings: Settings, ttl_s: float = 5.0) -> None:
        self._settings = settings  # whose keys decrypt the credentials
        self._ttl = ttl_s
        self._entries: dict[str, tuple[float, dict[str, ChannelConfig]]] = {}
        self._lock = threading.Lock()

    def for_app(self, session: Session, app_id: str) -> dict[str, ChannelConfig]:
        now = time.monotonic()
        with self._lock:
            entry = self._entries.get(app_id)
            if entry and entry[0] > now:
                return entry[1]
        configs = {
            c.channel_type: ChannelConfig(
                app_id=app_id,
                channel_type=c.channel_type,
                enabled=c.enabled,
                settings=dict(c.settings or {}),
                credentials=(
                    crypto.decrypt_json(c.secrets, self._settings) if c.secrets else {}
                ),
                version=c.version,
            )
            for c in session.scalars(select(Channel).where(Channel.app_id == app_id))
        }
        with self._lock:
            self._entries[app_id] = (now + self._ttl, configs)
        return configs

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


def require_kind(path: str) -> ChannelKind:
    kind = CHANNEL_KINDS.get(path)
    if kind is None:
        raise NotFound(f"Unknown channel {path}")
    return kind
