"""Who a message may say it is from: Pinpoint sent only from verified identities.

One Herald often serves many apps through one SMTP relay and one Twilio account, so the relay
and the account would send as whoever an app names. Unless the operator opts out
(``HERALD_ALLOW_ANY_SENDER=true``: one tenant per Herald), an app may send

- e-mail ``From`` (``FromAddress``, a raw message's ``From`` and ``Sender``) and
  ``FeedbackForwardingAddress`` only within its e-mail channel's ``Identity``: a domain (and
  its subdomains, as SES treats a verified domain), an e-mail address, or an SES identity ARN
  naming either;
- SMS and voice ``OriginationNumber`` / ``SenderId`` only as its SMS channel's ``ShortCode``
  or ``SenderId``, or the operator's ``HERALD_DEFAULT_ORIGINATION_NUMBER``.

Checked at intake (400, before anything is written) and when the e-mail channel is updated.
"""

from __future__ import annotations

from collections.abc import Mapping
from email.parser import BytesParser
from email.policy import default as default_policy
from email.utils import getaddresses, parseaddr

from worker import wire
from worker.core.addresses import normalize_phone
from worker.core.config import Settings
from worker.core.errors import BadRequest
from worker.core.vocabulary import ChannelConfig


def identity_of(identity: str) -> str:
    """The domain or address an e-mail channel's ``Identity`` names, lower-cased."""
    value = identity.strip().lower()
    if value.startswith("arn:"):
        value = value.rpartition(":identity/")[2] or value.rpartition("/")[2]
    return value


def within_identity(address: str, identity: str) -> bool:
    """Whether ``address`` (``Name <a@b>`` or ``a@b``) may be sent from under ``identity``."""
    mailbox = parseaddr(address)[1].lower()
    allowed = identity_of(identity)
    if not mailbox or not allowed:
        return False
    if "@" in allowed:
        return mailbox == allowed
    domain = mailbox.rpartition("@")[2]
    return domain == allowed or domain.endswith("." + allowed)


def check_channel_sender(channel: Mapping[str, object], settings: Settings) -> None:
    """An e-mail channel's ``FromAddress`` must be within its own ``Identity``."""
    if settings.allow_any_sender:
        return
    from_address = str(channel.get("FromAddress") or "")
    identity = str(channel.get("Identity") or "")
    if not within_identity(from_address, identity):
        raise BadRequest(
            f"FromAddress {parseaddr(from_address)[1][:80]} is not within the channel's "
            f"Identity {identity[:80]}: Herald sends only from the identity an app's e-mail "
            "channel names"
        )


def check_message_senders(
    config: wire.DirectMessageConfiguration,
    channels: Mapping[str, ChannelConfig],
    settings: Settings,
) -> None:
    """Raise BadRequest if the message names a sender its app's channels do not allow."""
    if settings.allow_any_sender:
        return
    _check_email(config.email_message, channels.get("EMAIL"))
    allowed = _allowed_numbers(channels.get("SMS"), settings)
    sms, voice = config.sms_message, config.voice_message
    for member, value in (
        ("SMSMessage.OriginationNumber", sms.origination_number if sms else None),
        ("SMSMessage.SenderId", sms.sender_id if sms else None),
        ("VoiceMessage.OriginationNumber", voice.origination_number if voice else None),
    ):
        if value and _sender_key(value) not in allowed:
            raise BadRequest(
                f"{member} {value[:40]} is not this application's: use the SMS channel's "
                "ShortCode or SenderId, or leave it out to send from the channel's sender"
            )


def _check_email(message: wire.EmailMessage | None, channel: ChannelConfig | None) -> None:
    if message is None or channel is None:
        return  # no e-mail channel: nothing will be sent as e-mail
    identity = str(channel.settings.get("Identity") or "")
    claimed: list[tuple[str, str | None]] = [
        ("EmailMessage.FromAddress", message.from_address),
        ("EmailMessage.FeedbackForwardingAddress", message.feedback_forwarding_address),
    ]
    if message.raw_email is not None and message.raw_email.data:
        claimed += _raw_senders(message.raw_email.data)
    for member, address in claimed:
        if address and not within_identity(address, identity):
            raise BadRequest(
                f"{member} {parseaddr(address)[1][:80]} is not within the e-mail channel's "
                f"Identity {identity[:80]}"
            )


def _raw_senders(raw: bytes) -> list[tuple[str, str | None]]:
    try:
        headers = BytesParser(policy=default_policy).parsebytes(raw, headersonly=True)
        return [
            (f"EmailMessage.RawEmail {name}", mailbox)
            for name in ("From", "Sender")
            for _, mailbox in getaddresses([str(v) for v in headers.get_all(name) or ()])
        ]
    except Exception:  # the email package raises assorted errors on hostile input
        raise BadRequest("EmailMessage.RawEmail: its From and Sender headers cannot be read"
                         ) from None


def _sender_key(value: str) -> str:
    # Numbers compare in E.164 form; alphanumeric sender ids case-insensitively.
    return normalize_phone(value) if value.lstrip().startswith(("+", "00")) else value.lower()


def _allowed_numbers(channel: ChannelConfig | None, settings: Settings) -> set[str]:
    values = [settings.default_origination_number]
    if channel is not None:
        values += [str(channel.settings.get(m) or "") for m in ("ShortCode", "SenderId")]
    return {_sender_key(v) for v in values if v}
