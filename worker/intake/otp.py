"""One-time passwords: SendOTPMessage and VerifyOTPMessage (DESIGN.md §8).

A code is sent as an ordinary SendMessages to one address, through the same intake, workers,
retries, result rows and dashboard as any SMS (or voice call). The code itself is never stored
in clear: the request's payload carries the text with ``{{OTP}}`` in it, the code travels
encrypted in the request's ``sealed_substitutions`` and is merged in only while a worker
renders the message, and ``one_time_passwords`` keeps an HMAC of it (keyed per app from
``HERALD_SECRET_KEY``), which verification compares in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from datetime import timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from worker import wire
from worker.core.addresses import is_e164, normalize_phone
from worker.core.config import Settings
from worker.core.crypto import decrypt, encrypt
from worker.core.db import utcnow
from worker.core.errors import BadRequest
from worker.core.models import OneTimePassword
from worker.core.vocabulary import ChannelType
from worker.intake.accept import Accepted, accept_messages_request
from worker.management.applications import get_application
from worker.management.channels import ChannelCache
from worker.management.senders import check_message_senders

# Pinpoint's limits and defaults ("Generate one-time passwords (OTPs) with Amazon Pinpoint").
CODE_LENGTH = (5, 8, 6)
VALIDITY_MINUTES = (5, 60, 15)
ALLOWED_ATTEMPTS = (1, 5, 3)
MAX_BRAND_NAME = 20
MAX_REFERENCE_ID = 128
CHANNELS = (ChannelType.SMS.value, ChannelType.VOICE.value)
# Pinpoint's message template, word for word, so users' recipients read what they always did.
# Language: Pinpoint translated this text; Herald has the English one only.
TEXT = "This is your One Time Password: {{OTP}} from {{BrandName}}"
CODE_VARIABLE = "OTP"


def _bounded(name: str, value: int | None, limits: tuple[int, int, int]) -> int:
    low, high, default = limits
    if value is None:
        return default
    if not low <= value <= high:
        raise BadRequest(f"{name} must be from {low} to {high}")
    return value


def _destination(value: str) -> str:
    number = normalize_phone(value)
    if not is_e164(number):
        raise BadRequest(
            f"DestinationIdentity '{value[:40]}' is not a phone number in E.164 form "
            "(+15555550100)"
        )
    return number


def _reference(value: str) -> str:
    if not value or len(value) > MAX_REFERENCE_ID:
        raise BadRequest(f"ReferenceId must be 1 to {MAX_REFERENCE_ID} characters")
    return value


def code_hash(settings: Settings, app_id: str, reference_id: str, destination: str,
              code: str) -> bytes:
    """The HMAC a code is stored as: bound to its app, reference and destination, so a row
    copied elsewhere verifies nothing."""
    message = "\x00".join((reference_id, destination, code)).encode()
    return hmac.new(settings.otp_key(app_id), message, hashlib.sha256).digest()


def new_code(length: int) -> str:
    return f"{secrets.randbelow(10 ** length):0{length}d}"


def _message(request: wire.SendOTPMessageRequestParameters, channel: str,
             origination: str) -> dict[str, Any]:
    """The MessageConfiguration (wire names) that sends the text; never holds the code."""
    substitutions = {"BrandName": [request.brand_name]}
    is_number = is_e164(normalize_phone(origination))
    if channel == ChannelType.VOICE:
        if not is_number:
            raise BadRequest("OriginationIdentity must be a phone number for the VOICE channel")
        voice: dict[str, Any] = {"Body": TEXT, "Substitutions": substitutions,
                                 "OriginationNumber": normalize_phone(origination)}
        if request.language:
            voice["LanguageCode"] = request.language
        return {"VoiceMessage": voice}
    sms: dict[str, Any] = {"Body": TEXT, "Substitutions": substitutions,
                           "MessageType": "TRANSACTIONAL"}
    if is_number:
        sms["OriginationNumber"] = normalize_phone(origination)
    else:
        sms["SenderId"] = origination
    if request.entity_id:
        sms["EntityId"] = request.entity_id
    if request.template_id:
        sms["TemplateId"] = request.template_id
    return {"SMSMessage": sms}


def accept_otp_request(
    session: Session,
    app_id: str,
    request: wire.SendOTPMessageRequestParameters,
    _payload: dict[str, Any],
    channels: ChannelCache,
    settings: Settings,
) -> Accepted:
    """Validate, make a code, hand the message to the SendMessages intake with the code
    sealed, and keep the code's HMAC (replacing any earlier code for this reference and
    destination)."""
    length = _bounded("CodeLength", request.code_length, CODE_LENGTH)
    minutes = _bounded("ValidityPeriod", request.validity_period, VALIDITY_MINUTES)
    attempts = _bounded("AllowedAttempts", request.allowed_attempts, ALLOWED_ATTEMPTS)
    channel = request.channel.upper()
    if channel not in CHANNELS:
        raise BadRequest("Channel must be SMS or VOICE")
    if not request.brand_name.strip() or len(request.brand_name) > MAX_BRAND_NAME:
        raise BadRequest(f"BrandName must be 1 to {MAX_BRAND_NAME} characters")
    reference_id = _reference(request.reference_id)
    destination = _destination(request.destination_identity)
    if not request.origination_identity.strip():
        raise BadRequest("OriginationIdentity is required")
    payload = {
        "Addresses": {destination: {"ChannelType": channel}},
        "MessageConfiguration": _message(request, channel, request.origination_identity),
    }
    message_request = wire.MessageRequest.model_validate(payload)
    get_application(session, app_id)
    try:
        check_message_senders(message_request.message_configuration,
                              channels.for_app(session, app_id), settings)
    except BadRequest:
        raise BadRequest(
            f"OriginationIdentity {request.origination_identity[:40]} is not this "
            "application's: use its SMS channel's ShortCode or SenderId"
        ) from None
    code = new_code(length)
    # A voice reads the digits one by one rather than as one large number.
    spoken = " ".join(code) if channel == ChannelType.VOICE else code
    sealed = encrypt(json.dumps({CODE_VARIABLE: [spoken]}).encode(), settings)
    accepted = accept_messages_request(session, app_id, message_request, payload, channels,
                                       settings, sealed_substitutions=sealed)
    now = utcnow()
    values = {
        "app_id": app_id, "reference_id": reference_id, "destination": destination,
        "code_hash": code_hash(settings, app_id, reference_id, destination, code),
        "attempts_left": attempts, "expires_at": now + timedelta(minutes=minutes),
        "used_at": None, "request_id": accepted.request_id, "created_at": now,
    }
    insert = (postgresql_insert if session.get_bind().dialect.name == "postgresql"
              else sqlite_insert)(OneTimePassword).values(**values)
    session.execute(insert.on_conflict_do_update(
        index_elements=["app_id", "reference_id", "destination"],
        set_={k: v for k, v in values.items()
              if k not in ("app_id", "reference_id", "destination")},
    ))
    return accepted


def unseal(payload: wire.MessageRequest, sealed: bytes, settings: Settings) -> wire.MessageRequest:
    """The payload with its sealed substitutions merged into every address's own (which win
    over every other layer), for rendering only: the result is never stored."""
    values = json.loads(decrypt(sealed, settings))
    addresses = {
        address: config.model_copy(
            update={"substitutions": {**(config.substitutions or {}), **values}})
        for address, config in (payload.addresses or {}).items()
    }
    return payload.model_copy(update={"addresses": addresses})


def verify_otp(
    session: Session, app_id: str, request: wire.VerifyOTPMessageRequestParameters,
    settings: Settings,
) -> bool:
    """Whether ``Otp`` is the live code for the reference and destination. Every call spends
    an attempt, the right code included; a used, expired or spent code is never valid.

    The attempt is spent by an UPDATE that locks the row until this transaction commits, and
    the code is marked used only if it still is unused: two concurrent verifications of the
    right code cannot both succeed."""
    reference_id = _reference(request.reference_id)
    destination = _destination(request.destination_identity)
    if not request.otp or len(request.otp) > CODE_LENGTH[1] * 2:
        raise BadRequest("Otp must be the code that was sent")
    get_application(session, app_id)
    now = utcnow()
    key = (
        (OneTimePassword.app_id == app_id)
        & (OneTimePassword.reference_id == reference_id)
        & (OneTimePassword.destination == destination)
        & OneTimePassword.used_at.is_(None)
    )
    spent = session.execute(
        update(OneTimePassword)
        .where(key, OneTimePassword.expires_at > now, OneTimePassword.attempts_left > 0)
        .values(attempts_left=OneTimePassword.attempts_left - 1)
        .returning(OneTimePassword.code_hash)
    ).first()
    if spent is None:
        return False
    given = code_hash(settings, app_id, reference_id, destination, request.otp.strip())
    if not hmac.compare_digest(spent.code_hash, given):
        return False
    used = session.execute(
        update(OneTimePassword).where(key, OneTimePassword.code_hash == spent.code_hash)
        .values(used_at=now).returning(OneTimePassword.reference_id)
    ).first()
    return used is not None
