"""Herald's one vocabulary: channel types, delivery statuses, outcomes, rendered messages.

Every role speaks these words: intake decides some outcomes itself, delivery renders and records
them, providers produce them, results and reports read them. They live here, below all of
those, so no role imports another just for a name.

``CHANNELS`` is the one table of what each sendable channel type is: its family and the member
of ``MessageConfiguration`` that carries its message. Which adapter delivers it is
configuration, in ``worker.providers.registry``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class ChannelType(StrEnum):
    """Pinpoint's ChannelType. Every member's name is its value, so a member and its plain
    string are equal and hash alike: ``"GCM" in PUSH_TYPES`` holds."""

    PUSH = "PUSH"
    GCM = "GCM"
    APNS = "APNS"
    APNS_SANDBOX = "APNS_SANDBOX"
    APNS_VOIP = "APNS_VOIP"
    APNS_VOIP_SANDBOX = "APNS_VOIP_SANDBOX"
    ADM = "ADM"
    SMS = "SMS"
    VOICE = "VOICE"
    EMAIL = "EMAIL"
    BAIDU = "BAIDU"
    CUSTOM = "CUSTOM"
    IN_APP = "IN_APP"


class Family(StrEnum):
    """What kind of message a channel carries, and so which rendered content it gets."""

    PUSH = "PUSH"
    EMAIL = "EMAIL"
    SMS = "SMS"
    VOICE = "VOICE"


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    channel_type: ChannelType
    family: Family
    message_member: str  # DirectMessageConfiguration's member for this channel (snake_case)


CHANNELS: dict[ChannelType, ChannelSpec] = {
    spec.channel_type: spec
    for spec in (
        ChannelSpec(ChannelType.APNS, Family.PUSH, "apns_message"),
        ChannelSpec(ChannelType.APNS_SANDBOX, Family.PUSH, "apns_message"),
        ChannelSpec(ChannelType.APNS_VOIP, Family.PUSH, "apns_message"),
        ChannelSpec(ChannelType.APNS_VOIP_SANDBOX, Family.PUSH, "apns_message"),
        ChannelSpec(ChannelType.GCM, Family.PUSH, "gcm_message"),
        ChannelSpec(ChannelType.ADM, Family.PUSH, "adm_message"),
        ChannelSpec(ChannelType.BAIDU, Family.PUSH, "baidu_message"),
        ChannelSpec(ChannelType.EMAIL, Family.EMAIL, "email_message"),
        ChannelSpec(ChannelType.SMS, Family.SMS, "sms_message"),
        ChannelSpec(ChannelType.VOICE, Family.VOICE, "voice_message"),
    )
}
SENDABLE_TYPES = frozenset(CHANNELS)
PUSH_TYPES = frozenset(t for t, spec in CHANNELS.items() if spec.family is Family.PUSH)
APNS_TYPES = frozenset(
    {ChannelType.APNS, ChannelType.APNS_SANDBOX, ChannelType.APNS_VOIP,
     ChannelType.APNS_VOIP_SANDBOX}
)
APNS_VOIP_TYPES = frozenset({ChannelType.APNS_VOIP, ChannelType.APNS_VOIP_SANDBOX})
APNS_SANDBOX_TYPES = frozenset({ChannelType.APNS_SANDBOX, ChannelType.APNS_VOIP_SANDBOX})

# The provider recorded for outcomes Herald decided without one (refused before sending).
INTERNAL_PROVIDER = "herald"
# The status shown for a delivery not yet attempted (it has no DeliveryStatus yet).
PENDING = "PENDING"
# A SendMessages recipient that is an address, not an endpoint: its result row's recipient key.
ADDRESS_PREFIX = "address:"
# The Celery queue the workers consume and the API enqueues to; deployed brokers hold it.
QUEUE = "herald"


class DeliveryStatus(StrEnum):
    SUCCESSFUL = "SUCCESSFUL"
    THROTTLED = "THROTTLED"
    TEMPORARY_FAILURE = "TEMPORARY_FAILURE"
    PERMANENT_FAILURE = "PERMANENT_FAILURE"
    UNKNOWN_FAILURE = "UNKNOWN_FAILURE"
    OPT_OUT = "OPT_OUT"
    DUPLICATE = "DUPLICATE"
    TIMEOUT = "TIMEOUT"

    @property
    def retryable(self) -> bool:
        return self in RETRYABLE


RETRYABLE = frozenset(
    {DeliveryStatus.TEMPORARY_FAILURE, DeliveryStatus.THROTTLED, DeliveryStatus.TIMEOUT}
)

# StatusCode when the provider gave no answer at all (there is no provider status to report),
# whatever its protocol: what an HTTP gateway would say in our place.
NO_CONNECTION_STATUS = 503
NO_ANSWER_STATUS = 504


@dataclass(frozen=True, slots=True)
class Outcome:
    """What one delivery attempt came to."""

    status: DeliveryStatus
    status_code: int
    status_message: str = ""
    message_id: str | None = None
    # A canonical address the provider gave back (ADM registrationID); the endpoint is updated.
    updated_token: str | None = None
    # Seconds the provider asked us to wait before trying again (Retry-After).
    retry_after: float | None = None
    # The address is dead (unregistered / invalid token): the endpoint becomes INACTIVE.
    deactivate_endpoint: bool = False


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """One application's configuration of one channel, secrets decrypted."""

    app_id: str
    channel_type: str  # a ChannelType value
    enabled: bool
    settings: dict[str, Any] = field(default_factory=dict)  # non-secret members, wire names
    credentials: dict[str, str] = field(default_factory=dict)  # secret members, wire names
    version: int = 1


# --- rendered messages, one content shape per channel family -----------------------------


@dataclass(frozen=True, slots=True)
class PushNotification:
    """A push message after message choice and substitution (APNs, FCM, ADM, Baidu).

    ``raw_content``, when set, is the complete provider payload and is sent verbatim.
    """

    title: str | None = None
    body: str | None = None
    action: str | None = None  # OPEN_APP | DEEP_LINK | URL
    url: str | None = None
    data: dict[str, str] = field(default_factory=dict)
    silent_push: bool = False
    sound: str | None = None
    raw_content: str | None = None
    context: dict[str, str] = field(default_factory=dict)
    # Channel-specific members, wire names (Badge, Category, ThreadId, MediaUrl, CollapseId,
    # Priority, TimeToLive, APNSPushType, PreferredAuthenticationMethod, CollapseKey,
    # RestrictedPackageName, ImageUrl, ImageIconUrl, SmallImageIconUrl, IconReference,
    # ConsolidationKey, ExpiresAfter, MD5, ...).
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class EmailContent:
    subject: str | None = None
    text: str | None = None
    html: str | None = None
    text_charset: str = "utf-8"
    html_charset: str = "utf-8"
    raw: bytes | None = None  # RawEmail.Data: a complete MIME message
    from_address: str | None = None
    reply_to: tuple[str, ...] = ()
    feedback_forwarding_address: str | None = None
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class SmsContent:
    body: str
    origination_number: str | None = None
    sender_id: str | None = None
    message_type: str = "TRANSACTIONAL"
    keyword: str | None = None
    media_url: str | None = None
    entity_id: str | None = None
    template_id: str | None = None


@dataclass(frozen=True, slots=True)
class VoiceContent:
    body: str
    language_code: str | None = None
    voice_id: str | None = None
    origination_number: str | None = None


Content = PushNotification | EmailContent | SmsContent | VoiceContent


@dataclass(frozen=True, slots=True)
class OutgoingMessage:
    """One rendered message for one address: what a provider is given to send."""

    # Stable per (request, endpoint) across attempts: a UUID string. APNs uses it as apns-id,
    # e-mail derives its Message-ID from it, so a repeated send is recognisable.
    delivery_id: str
    channel_type: str
    address: str
    content: Content
    attempt: int = 1
