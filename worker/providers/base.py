"""The one small interface every provider adapter implements.

A provider receives a :class:`Delivery` — one rendered message for one address — plus the
application's :class:`ChannelConfig`, and returns an :class:`Outcome`. Whenever the provider
answered, the answer is an outcome value, never an exception: the pipeline records it,
retries it or finalises it. Exceptions are for bugs.

Rendering happens before the provider is called (``worker.delivery.rendering``); adapters only
turn the rendered content into the provider's wire format (pure builders, tested apart) and do
the I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol


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


def push_failure(
    *,
    channel_type: str,
    status: DeliveryStatus,
    status_code: int,
    error_message: str,
    provider_error: str = "",
    provider_response: str = "",
    retry_after: float | None = None,
    deactivate_endpoint: bool = False,
) -> Outcome:
    """An outcome for a failed push, with the JSON ``StatusMessage`` Pinpoint gives (§4)."""
    message = json.dumps(
        {
            "errorMessage": error_message,
            "channelType": channel_type,
            "pushProviderStatusCode": str(status_code),
            "pushProviderError": provider_error,
            "pushProviderResponse": provider_response,
        }
    )
    return Outcome(
        status=status,
        status_code=status_code,
        status_message=message,
        retry_after=retry_after,
        deactivate_endpoint=deactivate_endpoint,
    )


@dataclass(frozen=True, slots=True)
class ChannelConfig:
    """One application's configuration of one channel, secrets decrypted."""

    app_id: str
    channel_type: str  # APNS, APNS_SANDBOX, APNS_VOIP, APNS_VOIP_SANDBOX, GCM, ADM, BAIDU, ...
    enabled: bool
    settings: dict[str, Any] = field(default_factory=dict)  # non-secret members, wire names
    credentials: dict[str, str] = field(default_factory=dict)  # secret members, wire names
    version: int = 1


# --- rendered content, one shape per channel family ------------------------------------


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
class Delivery:
    """One rendered message for one address."""

    # Stable per (request, endpoint) across attempts: a UUID string. APNs uses it as apns-id,
    # e-mail derives its Message-ID from it, so a repeated send is recognisable.
    delivery_id: str
    channel_type: str
    address: str
    content: Content
    attempt: int = 1


class Provider(Protocol):
    """A transport for one or more channel types. One instance per worker process."""

    name: str

    async def send(self, delivery: Delivery, channel: ChannelConfig) -> Outcome:
        """Deliver, or say why not. Must return within the configured provider timeout."""
        ...

    async def aclose(self) -> None:
        """Release pooled connections."""
        ...
