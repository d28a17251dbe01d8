"""SendOTPMessage and VerifyOTPMessage: boto3 end to end through the SMS pipeline and the
Twilio fake, plus verification called directly against Postgres where timing matters."""

from __future__ import annotations

import json
import re
import threading
import uuid
import xml.etree.ElementTree as ET
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from tests.conftest import Fakes
from tests.stack import Stack
from tests.test_dashboard import dashboard_link
from tests.test_sms_voice_e2e import sms_app
from worker import wire
from worker.core.config import Settings
from worker.intake.otp import code_hash, verify_otp

SENDER = "+15550000001"  # sms_app's ShortCode
TEXT = re.compile(r"This is your One Time Password: (\d+) from (.+)")


def destination() -> str:
    return f"+1555{uuid.uuid4().int % 10**7:07d}"


def send_otp(client: Any, app_id: str, to: str, reference: str = "login",
             **members: Any) -> dict[str, Any]:
    request = {"BrandName": "Acme", "Channel": "SMS", "DestinationIdentity": to,
               "OriginationIdentity": SENDER, "ReferenceId": reference, **members}
    response = client.send_otp_message(ApplicationId=app_id,
                                       SendOTPMessageRequestParameters=request)
    result: dict[str, Any] = response["MessageResponse"]
    return result


def sent_code(fakes: Fakes, to: str, brand: str = "Acme") -> str:
    """The code of the latest SMS to ``to``, read from what Twilio received."""
    bodies = [m.field("Body") or "" for m in fakes.twilio.messages if m.field("To") == to]
    match = TEXT.fullmatch(bodies[-1])
    assert match is not None and match.group(2) == brand, bodies[-1]
    return match.group(1)


def verify(client: Any, app_id: str, to: str, code: str, reference: str = "login") -> bool:
    response = client.verify_otp_message(ApplicationId=app_id,
                                         VerifyOTPMessageRequestParameters={
                                             "DestinationIdentity": to, "Otp": code,
                                             "ReferenceId": reference})
    valid: bool = response["VerificationResponse"]["Valid"]
    return valid


def test_a_code_is_sent_by_sms_and_verifies_once(
    client: Any, app_id: str, fakes: Fakes
) -> None:
    sms_app(client, app_id)
    to = destination()
    answer = send_otp(client, app_id, to)
    assert answer["ApplicationId"] == app_id and answer["RequestId"]
    outcome = answer["Result"][to]
    assert outcome["DeliveryStatus"] == "SUCCESSFUL" and outcome["StatusCode"] == 201
    assert outcome["MessageId"].startswith("SM")
    code = sent_code(fakes, to)
    assert len(code) == 6  # the default CodeLength
    [sms] = [m for m in fakes.twilio.messages if m.field("To") == to]
    assert sms.field("From") == SENDER
    assert not verify(client, app_id, to, code, reference="another-reference")
    assert verify(client, app_id, to, code)
    assert not verify(client, app_id, to, code)  # used


def test_wrong_codes_count_until_the_code_is_locked(
    client: Any, app_id: str, fakes: Fakes
) -> None:
    sms_app(client, app_id)
    to = destination()
    send_otp(client, app_id, to, AllowedAttempts=2, CodeLength=8)
    code = sent_code(fakes, to)
    assert len(code) == 8
    wrong = f"{(int(code) + 1) % 10**8:08d}"
    assert not verify(client, app_id, to, wrong)
    assert not verify(client, app_id, to, wrong)
    assert not verify(client, app_id, to, code)  # two attempts spent: locked


def test_a_new_code_replaces_the_old(client: Any, app_id: str, fakes: Fakes) -> None:
    sms_app(client, app_id)
    to = destination()
    send_otp(client, app_id, to)
    old = sent_code(fakes, to)
    send_otp(client, app_id, to)
    new = sent_code(fakes, to)
    if new != old:  # one chance in a million that they are the same
        assert not verify(client, app_id, to, old)
    assert verify(client, app_id, to, new)


def test_an_expired_code_is_not_valid(
    client: Any, app_id: str, fakes: Fakes, db: Engine
) -> None:
    sms_app(client, app_id)
    to = destination()
    send_otp(client, app_id, to, ValidityPeriod=5)
    code = sent_code(fakes, to)
    with db.begin() as conn:
        conn.execute(text("UPDATE one_time_passwords SET expires_at = now() - interval '1 second'"
                          " WHERE app_id = :a"), {"a": app_id})
    assert not verify(client, app_id, to, code)


def test_a_code_by_voice_is_read_digit_by_digit(
    client: Any, app_id: str, fakes: Fakes
) -> None:
    sms_app(client, app_id)
    to = destination()
    outcome = send_otp(client, app_id, to, Channel="VOICE", CodeLength=5,
                       Language="en-GB")["Result"][to]
    assert outcome["DeliveryStatus"] == "SUCCESSFUL"
    [call] = [c for c in fakes.twilio.calls if c.field("To") == to]
    [say] = list(ET.fromstring(call.field("Twiml") or ""))
    match = re.fullmatch(r"This is your One Time Password: ((?:\d ){4}\d) from Acme",
                         say.text or "")
    assert match is not None, say.text
    assert verify(client, app_id, to, match.group(1).replace(" ", ""))


@pytest.mark.parametrize(("member", "value", "says"), [
    ("CodeLength", 4, "CodeLength"), ("CodeLength", 9, "CodeLength"),
    ("ValidityPeriod", 4, "ValidityPeriod"), ("ValidityPeriod", 61, "ValidityPeriod"),
    ("AllowedAttempts", 0, "AllowedAttempts"), ("AllowedAttempts", 6, "AllowedAttempts"),
    ("Channel", "EMAIL", "Channel"), ("DestinationIdentity", "not-a-number", "E.164"),
    ("BrandName", "B" * 21, "BrandName"), ("OriginationIdentity", "+15559999999",
                                           "OriginationIdentity"),
])
def test_bad_parameters_are_400_and_send_nothing(
    client: Any, app_id: str, fakes: Fakes, member: str, value: Any, says: str
) -> None:
    sms_app(client, app_id)
    to = destination()
    before = len(fakes.twilio.requests)
    with pytest.raises(ClientError) as caught:
        send_otp(client, app_id, to, **{member: value})
    assert caught.value.response["Error"]["Code"] == "BadRequestException"
    assert says in caught.value.response["Error"]["Message"]
    assert len(fakes.twilio.requests) == before
    with pytest.raises(ClientError) as caught:
        verify(client, app_id, "not-a-number", "123456")
    assert caught.value.response["Error"]["Code"] == "BadRequestException"


def test_the_code_is_stored_nowhere_in_clear(
    client: Any, app_id: str, fakes: Fakes, db: Engine, stack: Stack, api_url: str
) -> None:
    sms_app(client, app_id)
    to = destination()
    request_id = send_otp(client, app_id, to, CodeLength=8)["RequestId"]
    code = sent_code(fakes, to)
    with db.connect() as conn:
        stored = [
            json.dumps([str(v) for v in row], default=str) for query in (
                "SELECT * FROM deliveries WHERE request_id = :r",
                "SELECT a.* FROM delivery_attempts a JOIN deliveries d ON d.id = a.delivery_id"
                " WHERE d.request_id = :r",
                "SELECT id, payload, sealed_substitutions FROM message_requests WHERE id = :r",
                "SELECT * FROM one_time_passwords WHERE request_id = :r",
            ) for row in conn.execute(text(query), {"r": request_id})
        ]
        payload = conn.execute(text("SELECT payload FROM message_requests WHERE id = :r"),
                               {"r": request_id}).scalar()
        code_hash_stored = conn.execute(text(
            "SELECT code_hash FROM one_time_passwords WHERE request_id = :r"),
            {"r": request_id}).scalar()
    assert len(stored) == 4 and all(code not in row for row in stored)
    assert "{{OTP}}" in json.dumps(payload)  # the text is there, the code is not
    assert code.encode() not in bytes(code_hash_stored)
    for output in (stack.run("results", request_id).stdout,
                   stack.run("results", request_id, "--json").stdout):
        assert to[-4:] in output or "SUCCESSFUL" in output
        assert code not in output
    with httpx.Client(base_url=api_url) as browser_like:
        assert browser_like.get(dashboard_link(stack, api_url)).status_code == 200
        page = browser_like.get(f"/dashboard/requests/{request_id}")
        overview = browser_like.get("/dashboard")
    assert page.status_code == 200 and "SUCCESSFUL" in page.text
    assert code not in page.text and code not in overview.text


# --- verification, called directly against Postgres ----------------------------------------


def _settings() -> Settings:
    from tests.stack import SECRET_KEY
    return Settings(secret_key=SECRET_KEY, database_url="sqlite://")


def _code_row(db: Engine, app_id: str, code: str, attempts: int = 3) -> tuple[str, str]:
    reference, to = f"ref-{uuid.uuid4().hex[:8]}", destination()
    with db.begin() as conn:
        conn.execute(text(
            "INSERT INTO one_time_passwords (app_id, reference_id, destination, code_hash,"
            " attempts_left, expires_at, request_id, created_at) VALUES (:a, :r, :d, :h, :n,"
            " now() + interval '5 minutes', :q, now())"
        ), {"a": app_id, "r": reference, "d": to, "n": attempts, "q": str(uuid.uuid4()),
            "h": code_hash(_settings(), app_id, reference, to, code)})
    return reference, to


def _request(reference: str, to: str, code: str) -> wire.VerifyOTPMessageRequestParameters:
    return wire.VerifyOTPMessageRequestParameters(
        reference_id=reference, destination_identity=to, otp=code)


def test_the_hash_binds_the_code_to_its_app_reference_and_destination() -> None:
    settings = _settings()
    base = code_hash(settings, "app", "ref", "+15550000001", "123456")
    assert len(base) == 32 and b"123456" not in base
    assert base == code_hash(settings, "app", "ref", "+15550000001", "123456")
    for other in (("other-app", "ref", "+15550000001", "123456"),
                  ("app", "other", "+15550000001", "123456"),
                  ("app", "ref", "+15550000002", "123456"),
                  ("app", "ref", "+15550000001", "123457")):
        assert code_hash(settings, *other) != base
    elsewhere = Settings(secret_key="Zq8Lw3Nv6Tb1Hx4Ck7Pm2Jr5Gd9Fs0Ya", database_url="sqlite://")
    assert code_hash(elsewhere, "app", "ref", "+15550000001", "123456") != base


def test_every_attempt_is_spent_even_the_right_one(db: Engine, app_id: str) -> None:
    reference, to = _code_row(db, app_id, "123456", attempts=1)
    with Session(db) as session, session.begin():
        assert verify_otp(session, app_id, _request(reference, to, "000000"), _settings()) \
            is False
    with db.connect() as conn:
        left = conn.execute(text("SELECT attempts_left FROM one_time_passwords"
                                 " WHERE reference_id = :r"), {"r": reference}).scalar()
    assert left == 0
    with Session(db) as session, session.begin():
        assert not verify_otp(session, app_id, _request(reference, to, "123456"), _settings())


def test_two_concurrent_verifications_of_the_right_code_do_not_both_succeed(
    db: Engine, app_id: str
) -> None:
    reference, to = _code_row(db, app_id, "123456")
    settings = _settings()
    first = Session(db)
    first.begin()
    assert verify_otp(first, app_id, _request(reference, to, "123456"), settings)
    results: list[bool] = []

    def second() -> None:
        # Waits on the row the first verification holds until that one commits.
        with Session(db) as session, session.begin():
            results.append(verify_otp(session, app_id, _request(reference, to, "123456"),
                                      settings))

    thread = threading.Thread(target=second)
    thread.start()
    first.commit()
    first.close()
    thread.join()
    assert results == [False]


def test_maintenance_forgets_expired_codes_and_delivered_sealed_codes(
    client: Any, app_id: str, fakes: Fakes, db: Engine
) -> None:
    from sqlalchemy.orm import sessionmaker

    from worker.delivery.retention import forget_spent_codes

    sms_app(client, app_id)
    to = destination()
    request_id = send_otp(client, app_id, to)["RequestId"]  # delivered: every row final
    live_reference, live_to = _code_row(db, app_id, "123456")
    with db.begin() as conn:
        conn.execute(text("UPDATE one_time_passwords SET expires_at = now() - interval '1 second'"
                          " WHERE app_id = :a AND destination = :d"), {"a": app_id, "d": to})
    forget_spent_codes(sessionmaker(db))
    with db.connect() as conn:
        sealed = conn.execute(text("SELECT sealed_substitutions FROM message_requests"
                                   " WHERE id = :r"), {"r": request_id}).scalar()
        left = conn.execute(text("SELECT destination FROM one_time_passwords WHERE app_id = :a"),
                            {"a": app_id}).scalars().all()
    assert sealed is None
    assert left == [live_to]  # the unexpired code stays
    with Session(db) as session, session.begin():
        assert verify_otp(session, app_id, _request(live_reference, live_to, "123456"),
                          _settings())
