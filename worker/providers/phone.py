"""What the SMS and voice adapters (Twilio, SMPP) share: phone numbers and SMS senders.

Both refuse, before any request, what their provider would refuse anyway: content of the
wrong kind, an address that is not an E.164 number, an SMS without a sender.
"""

from __future__ import annotations

from typing import NamedTuple, TypeVar

from worker.core.addresses import is_e164
from worker.core.vocabulary import (
    ChannelConfig,
    DeliveryStatus,
    Outcome,
    OutgoingMessage,
    SmsContent,
    VoiceContent,
)

Content = TypeVar("Content", SmsContent, VoiceContent)


def refused(message: str) -> Outcome:
    """Refused before any request: the provider would have answered 400."""
    return Outcome(status=DeliveryStatus.PERMANENT_FAILURE, status_code=400, status_message=message)


def resolve_sms_sender(
    content: SmsContent, channel: ChannelConfig, default_origination_number: str | None
) -> str | None:
    """Who an SMS comes from, in DESIGN.md §4's order.

    The message's ``OriginationNumber``, else its ``SenderId``, else the channel's
    (``ShortCode`` before ``SenderId``: a number can be answered), else
    ``HERALD_DEFAULT_ORIGINATION_NUMBER``.
    """
    candidates = (
        content.origination_number,
        content.sender_id,
        channel.settings.get("ShortCode"),
        channel.settings.get("SenderId"),
        default_origination_number,
    )
    for candidate in candidates:
        if isinstance(candidate, str) and candidate.strip():
            return candidate.strip()
    return None


def phone_delivery(
    delivery: OutgoingMessage, kind: type[Content], provider: str
) -> tuple[Content, str] | Outcome:
    """The content of ``kind`` and the E.164 number it goes to, or the refusal."""
    content = delivery.content
    if not isinstance(content, kind):
        return refused(f"{provider} cannot send {type(content).__name__}")
    to = delivery.address.strip()
    if not is_e164(to):
        return refused(f"Address {to!r} is not an E.164 phone number")
    return content, to


class SmsRoute(NamedTuple):
    content: SmsContent
    to: str  # E.164
    sender: str


def sms_route(
    delivery: OutgoingMessage, channel: ChannelConfig, provider: str, default_sender: str | None
) -> SmsRoute | Outcome:
    """The SMS, its number and its sender (:func:`resolve_sms_sender`), or the refusal."""
    checked = phone_delivery(delivery, SmsContent, provider)
    if isinstance(checked, Outcome):
        return checked
    content, to = checked
    sender = resolve_sms_sender(content, channel, default_sender)
    if sender is None:
        return refused(
            "No sender: set the message's OriginationNumber or SenderId, the SMS "
            "channel's ShortCode or SenderId, or HERALD_DEFAULT_ORIGINATION_NUMBER"
        )
    return SmsRoute(content, to, sender)
