"""SMS and voice end to end: boto3 → herald api → worker → Twilio's REST shapes (and an SMSC
over SMPP), asserting what the fakes received and what the response says."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest

from tests.conftest import Fakes, provider_env
from tests.fakes.smsc import FakeSmsc
from tests.fakes.smtp import FakeSmtp
from tests.stack import Stack, pinpoint
from tests.test_send_users import register, send


def sms_app(client: Any, app_id: str, number: str = "+15550000001") -> str:
    """An app whose SMS channel sends as HERALD or from ``number`` (its ShortCode: a message
    may name only its channel's senders)."""
    client.update_sms_channel(ApplicationId=app_id, SMSChannelRequest={
        "SenderId": "HERALD", "ShortCode": number, "Enabled": True})
    client.update_voice_channel(ApplicationId=app_id, VoiceChannelRequest={"Enabled": True})
    return app_id


def test_sms_body_sender_and_outcomes(client: Any, app_id: str, fakes: Fakes) -> None:
    sms_app(client, app_id)
    fakes.twilio.fail(400, 21610, "Attempt to send to unsubscribed recipient",
                      to="+15550100002")
    fakes.twilio.fail(400, 21211, "Invalid 'To' Phone Number", to="+15550100003")
    register(client, app_id, {
        "ok": {"ChannelType": "SMS", "Address": "+15550100001",
               "User": {"UserId": "u", "UserAttributes": {"FirstName": ["Sam"]}}},
        "stop": {"ChannelType": "SMS", "Address": "+15550100002", "User": {"UserId": "u"}},
        "bad": {"ChannelType": "SMS", "Address": "+15550100003", "User": {"UserId": "u"}},
        "letters": {"ChannelType": "SMS", "Address": "not-a-number", "User": {"UserId": "u"}},
    })
    response = send(client, app_id, {
        "MessageConfiguration": {"SMSMessage": {
            "Body": "Hi {{User.UserAttributes.FirstName}}", "OriginationNumber": "+15550000001",
            "MessageType": "TRANSACTIONAL"}},
        "Users": {"u": {}}})
    result = response["Result"]["u"]
    assert result["ok"]["DeliveryStatus"] == "SUCCESSFUL" and result["ok"]["StatusCode"] == 201
    assert result["ok"]["MessageId"].startswith("SM")
    assert result["stop"]["DeliveryStatus"] == "OPT_OUT"
    assert result["bad"]["DeliveryStatus"] == "PERMANENT_FAILURE"
    assert result["bad"]["StatusCode"] == 400
    assert result["letters"]["DeliveryStatus"] == "PERMANENT_FAILURE"
    [sent] = [m for m in fakes.twilio.messages if m.field("To") == "+15550100001"]
    assert sent.field("Body") == "Hi Sam" and sent.field("From") == "+15550000001"
    assert sent.auth == (fakes.twilio.account_sid, fakes.twilio.auth_token)
    assert not [m for m in fakes.twilio.messages if m.field("To") == "not-a-number"]


def test_sms_sender_falls_back_to_the_channel(client: Any, app_id: str, fakes: Fakes) -> None:
    sms_app(client, app_id)
    register(client, app_id, {"p": {"ChannelType": "SMS", "Address": "+15550100011",
                                    "User": {"UserId": "u"}}})
    send(client, app_id, {"MessageConfiguration": {"DefaultMessage": {"Body": "hey"}},
                          "Users": {"u": {}}})
    [sent] = [m for m in fakes.twilio.messages if m.field("To") == "+15550100011"]
    assert sent.field("From") == "+15550000001" and sent.field("Body") == "hey"


def test_temporary_failures_then_success_inside_the_window(client: Any, app_id: str,
                                                           fakes: Fakes, db: Any) -> None:
    from sqlalchemy import text

    sms_app(client, app_id)
    fakes.twilio.fail(503, None, "Service Unavailable", to="+15550100021", times=2)
    register(client, app_id, {"p": {"ChannelType": "SMS", "Address": "+15550100021",
                                    "User": {"UserId": "u"}}})
    response = send(client, app_id, {"MessageConfiguration": {"DefaultMessage": {"Body": "x"}},
                                     "Users": {"u": {}}})
    assert response["Result"]["u"]["p"]["DeliveryStatus"] == "SUCCESSFUL"
    with db.connect() as conn:
        statuses = conn.execute(text(
            "select a.delivery_status from delivery_attempts a join deliveries d "
            "on d.id = a.delivery_id where d.request_id = :r order by a.attempt"),
            {"r": response["RequestId"]}).scalars().all()
    assert statuses == ["TEMPORARY_FAILURE", "TEMPORARY_FAILURE", "SUCCESSFUL"]


def test_voice_call_with_escaped_twiml(client: Any, app_id: str, fakes: Fakes) -> None:
    sms_app(client, app_id)
    register(client, app_id, {"line": {"ChannelType": "VOICE", "Address": "+15550100031",
                                       "User": {"UserId": "v"}}})
    response = send(client, app_id, {
        "MessageConfiguration": {"VoiceMessage": {
            "Body": "Your code is {{Code}}", "LanguageCode": "en-GB", "VoiceId": "Amy",
            "OriginationNumber": "+15550000001"}},
        "Users": {"v": {"Substitutions": {"Code": ["1</Say><Play>http://evil</Play>"]}}}})
    outcome = response["Result"]["v"]["line"]
    assert outcome["DeliveryStatus"] == "SUCCESSFUL" and outcome["MessageId"].startswith("CA")
    [call] = [c for c in fakes.twilio.calls if c.field("To") == "+15550100031"]
    assert call.field("From") == "+15550000001"
    twiml = ET.fromstring(call.field("Twiml") or "")
    [say] = list(twiml)
    assert say.tag == "Say" and say.get("language") == "en-GB" and say.get("voice") == "Polly.Amy"
    assert say.text == "Your code is 1</Say><Play>http://evil</Play>"


@pytest.fixture(scope="module")
def smpp_stack(smtp: FakeSmtp, fakes: Fakes) -> Iterator[tuple[Stack, FakeSmsc]]:
    smsc = FakeSmsc()
    smsc.start()
    stack = Stack("smpp", env={**provider_env(smtp, fakes), "HERALD_SMS_TRANSPORT": "smpp",
                               "HERALD_SMPP_URL": smsc.url})
    try:
        stack.start_worker(concurrency=1)
        stack.start_api()
        yield stack, smsc
    finally:
        stack.stop()
        smsc.stop()


def test_sms_over_smpp_long_message(smpp_stack: tuple[Stack, FakeSmsc]) -> None:
    stack, smsc = smpp_stack
    client = pinpoint(stack.apis[0][1])
    app_id = client.create_app(CreateApplicationRequest={"Name": "smpp"})[
        "ApplicationResponse"]["Id"]
    sms_app(client, app_id, "+447700900000")
    register(client, app_id, {"p": {"ChannelType": "SMS", "Address": "+447700900123",
                                    "User": {"UserId": "u"}}})
    body = "Long message " + "x" * 300
    response = send(client, app_id, {
        "MessageConfiguration": {"SMSMessage": {"Body": body,
                                                "OriginationNumber": "+447700900000"}},
        "Users": {"u": {}}})
    outcome = response["Result"]["u"]["p"]
    assert outcome["DeliveryStatus"] == "SUCCESSFUL" and outcome["MessageId"]
    assert smsc.texts("447700900123") == [body]
