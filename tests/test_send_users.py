"""SendUsersMessages end to end: boto3 → herald api → Celery on Redis → herald worker →
SMTP (a real aiosmtpd server) → result rows → the synchronous answer."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.fakes.smtp import FakeSmtp
from tests.test_management import _signed, error_of


def register(client: Any, app_id: str, endpoints: dict[str, dict[str, Any]]) -> None:
    items = [{"Id": endpoint_id, **body} for endpoint_id, body in endpoints.items()]
    client.update_endpoints_batch(ApplicationId=app_id, EndpointBatchRequest={"Item": items})


def send(client: Any, app_id: str, request: dict[str, Any]) -> dict[str, Any]:
    return client.send_users_messages(ApplicationId=app_id, SendUsersMessageRequest=request)[
        "SendUsersMessageResponse"
    ]


def rows(db: Engine, request_id: str) -> dict[str, Any]:
    with db.connect() as conn:
        found = conn.execute(text(
            "select * from deliveries where request_id = :r order by id"), {"r": request_id}
        ).mappings().all()
    return {row["recipient"]: dict(row) for row in found}


def test_two_users_several_endpoints_delivered_over_smtp(
    client: Any, email_app: str, smtp: FakeSmtp, db: Engine
) -> None:
    register(client, email_app, {
        "ada-work": {"ChannelType": "EMAIL", "Address": "ada@work.test",
                     "User": {"UserId": "ada", "UserAttributes": {"FirstName": ["Ada"]}},
                     "Attributes": {"plan": ["gold"]}},
        "ada-home": {"ChannelType": "EMAIL", "Address": "ada@home.test",
                     "User": {"UserId": "ada", "UserAttributes": {"FirstName": ["Ada"]}}},
        "bob-mail": {"ChannelType": "EMAIL", "Address": "bob@work.test",
                     "User": {"UserId": "bob", "UserAttributes": {"FirstName": ["Bob"]}}},
    })
    response = send(client, email_app, {
        "MessageConfiguration": {"EmailMessage": {"SimpleEmail": {
            "Subject": {"Data": "Hello {{User.UserAttributes.FirstName}}"},
            "TextPart": {"Data": "Your plan: {{Attributes.plan}}. {{Greeting}}"},
            "HtmlPart": {"Data": "<p>Hi {{User.UserAttributes.FirstName}} {{Greeting}}</p>"},
        }, "Substitutions": {"Greeting": ["Cheers & <thanks>"]}}},
        "Users": {"ada": {}, "bob": {"Substitutions": {"Greeting": ["Bye"]}}},
        "Context": {"campaign": "nov"},
        "TraceId": "trace-1",
    })
    assert response["ApplicationId"] == email_app
    result = response["Result"]
    assert set(result) == {"ada", "bob"}
    assert set(result["ada"]) == {"ada-work", "ada-home"}
    for user, endpoints in result.items():
        for endpoint_id, outcome in endpoints.items():
            assert outcome["DeliveryStatus"] == "SUCCESSFUL", (user, endpoint_id, outcome)
            assert outcome["StatusCode"] == 250
            assert "@" in outcome["MessageId"] and "<" not in outcome["MessageId"]

    work = smtp.to("ada@work.test")[-1].message
    assert work["Subject"] == "Hello Ada"
    assert work["From"] == "news@herald.test"
    assert work["Message-ID"] == f"<{result['ada']['ada-work']['MessageId']}>"
    assert work.get_content_type() == "multipart/alternative"
    plain = work.get_body(("plain",)).get_content()
    html = work.get_body(("html",)).get_content()
    assert "Your plan: gold. Cheers & <thanks>" in plain  # text part: not escaped
    assert "<p>Hi Ada Cheers &amp; &lt;thanks&gt;</p>" in html  # HTML part: escaped
    home = smtp.to("ada@home.test")[-1].message
    assert "Your plan: . Cheers" in home.get_body(("plain",)).get_content()  # missing → empty
    bob = smtp.to("bob@work.test")[-1].message
    assert bob["Subject"] == "Hello Bob" and "Bye" in bob.get_body(("plain",)).get_content()

    stored = rows(db, response["RequestId"])
    assert set(stored) == {"ada-work", "ada-home", "bob-mail"}
    for row in stored.values():
        assert row["delivery_status"] == "SUCCESSFUL" and row["final"] and row["attempts"] == 1
        assert row["app_id"] == email_app and row["final_at"] is not None
    with db.connect() as conn:
        request = conn.execute(text("select * from message_requests where id = :r"),
                               {"r": response["RequestId"]}).mappings().one()
        attempts = conn.execute(text(
            "select count(*) from delivery_attempts a join deliveries d on d.id = a.delivery_id "
            "where d.request_id = :r"), {"r": response["RequestId"]}).scalar()
    assert request["trace_id"] == "trace-1" and request["payload"]["Context"] == {"campaign": "nov"}
    assert attempts == 3


def test_semantics_without_a_provider(client: Any, email_app: str, smtp: FakeSmtp,
                                      db: Engine) -> None:
    register(client, email_app, {
        "a1": {"ChannelType": "EMAIL", "Address": "Same@Dup.test", "User": {"UserId": "u1"}},
        "a2": {"ChannelType": "EMAIL", "Address": "same@dup.test", "User": {"UserId": "u1"}},
        "opted": {"ChannelType": "EMAIL", "Address": "out@x.test", "OptOut": "ALL",
                  "User": {"UserId": "u2"}},
        "sleeping": {"ChannelType": "EMAIL", "Address": "zzz@x.test",
                     "EndpointStatus": "INACTIVE", "User": {"UserId": "u2"}},
        "phone": {"ChannelType": "SMS", "Address": "+15550001111", "User": {"UserId": "u2"}},
    })
    before = len(smtp.received)
    response = send(client, email_app, {
        "MessageConfiguration": {"DefaultMessage": {"Body": "plain {{Address}}"}},
        "Users": {"u1": {}, "u2": {}, "nobody": {}},
    })
    result = response["Result"]
    assert result["nobody"] == {"": {"Address": "", "DeliveryStatus": "PERMANENT_FAILURE",
                                     "StatusCode": 400,
                                     "StatusMessage": "No endpoints found for userId."}}
    assert result["u1"]["a1"]["DeliveryStatus"] == "SUCCESSFUL"
    assert result["u1"]["a2"]["DeliveryStatus"] == "DUPLICATE"
    assert result["u2"]["opted"]["DeliveryStatus"] == "OPT_OUT"
    assert "sleeping" not in result["u2"]  # INACTIVE endpoints are skipped
    assert result["u2"]["phone"]["DeliveryStatus"] == "PERMANENT_FAILURE"
    assert "SMS channel is not enabled" in result["u2"]["phone"]["StatusMessage"]
    delivered = smtp.received[before:]
    assert [r.recipients for r in delivered] == [["Same@Dup.test"]]
    assert delivered[0].message.get_content().strip() == "plain Same@Dup.test"


def test_no_message_for_channel_is_a_permanent_failure_and_rest_proceeds(
    client: Any, email_app: str
) -> None:
    client.update_sms_channel(ApplicationId=email_app, SMSChannelRequest={"Enabled": True})
    register(client, email_app, {
        "mail": {"ChannelType": "EMAIL", "Address": "m@x.test", "User": {"UserId": "u"}},
        "sms": {"ChannelType": "SMS", "Address": "+15550002222", "User": {"UserId": "u"}},
    })
    response = send(client, email_app, {
        "MessageConfiguration": {"EmailMessage": {"Body": "mail only"}},
        "Users": {"u": {}},
    })
    assert response["Result"]["u"]["mail"]["DeliveryStatus"] == "SUCCESSFUL"
    sms = response["Result"]["u"]["sms"]
    assert sms["DeliveryStatus"] == "PERMANENT_FAILURE" and sms["StatusCode"] == 400
    assert "No message was provided for the SMS channel" in sms["StatusMessage"]


def test_overrides_win_and_body_override_is_text_alone(
    client: Any, email_app: str, smtp: FakeSmtp
) -> None:
    register(client, email_app, {
        "m": {"ChannelType": "EMAIL", "Address": "override@x.test", "User": {"UserId": "u"}},
    })
    send(client, email_app, {
        "MessageConfiguration": {"EmailMessage": {"SimpleEmail": {
            "Subject": {"Data": "default subject"},
            "HtmlPart": {"Data": "<b>html</b>"}}}},
        "Users": {"u": {"BodyOverride": "just for {{Name}}", "TitleOverride": "Yours",
                        "Substitutions": {"Name": ["you", "ignored"]}}},
    })
    message = smtp.to("override@x.test")[-1].message
    assert message["Subject"] == "Yours"
    assert message.get_content_type() == "text/plain"
    assert message.get_content().strip() == "just for you"


def test_smtp_4xx_is_retried_and_5xx_is_permanent(
    client: Any, email_app: str, smtp: FakeSmtp, db: Engine
) -> None:
    smtp.script("flaky@x.test", [451])
    smtp.script("gone@x.test", [550], stage="rcpt")
    register(client, email_app, {
        "flaky": {"ChannelType": "EMAIL", "Address": "flaky@x.test", "User": {"UserId": "u"}},
        "gone": {"ChannelType": "EMAIL", "Address": "gone@x.test", "User": {"UserId": "u"}},
    })
    response = send(client, email_app, {
        "MessageConfiguration": {"DefaultMessage": {"Body": "hi"}}, "Users": {"u": {}},
    })
    flaky = response["Result"]["u"]["flaky"]
    gone = response["Result"]["u"]["gone"]
    assert (gone["DeliveryStatus"], gone["StatusCode"]) == ("PERMANENT_FAILURE", 550)
    assert flaky["DeliveryStatus"] == "SUCCESSFUL"  # 451 first, then accepted on the retry
    stored = rows(db, response["RequestId"])
    assert stored["flaky"]["attempts"] == 2 and stored["gone"]["attempts"] == 1
    with db.connect() as conn:
        tries = conn.execute(text(
            "select delivery_status, status_code from delivery_attempts where delivery_id = :d "
            "order by attempt"), {"d": stored["flaky"]["id"]}).all()
    assert [tuple(t) for t in tries] == [("TEMPORARY_FAILURE", 451), ("SUCCESSFUL", 250)]
    assert len(smtp.to("flaky@x.test")) == 1 and smtp.to("gone@x.test") == []


def test_substitution_cannot_inject_an_email_header(
    client: Any, email_app: str, smtp: FakeSmtp
) -> None:
    register(client, email_app, {
        "m": {"ChannelType": "EMAIL", "Address": "inject@x.test", "User": {"UserId": "u"}},
    })
    response = send(client, email_app, {
        "MessageConfiguration": {"EmailMessage": {"SimpleEmail": {
            "Subject": {"Data": "Hi {{Name}}"}, "TextPart": {"Data": "body"}}}},
        "Users": {"u": {"Substitutions": {"Name": ["x\r\nBcc: victim@evil.test"]}}},
    })
    outcome = response["Result"]["u"]["m"]
    assert outcome["DeliveryStatus"] == "PERMANENT_FAILURE" and outcome["StatusCode"] == 400
    assert "line breaks" in outcome["StatusMessage"]
    assert smtp.to("inject@x.test") == [] and smtp.to("victim@evil.test") == []


def test_results_extension_reports_attempts_and_final(
    client: Any, email_app: str, api_url: str
) -> None:
    register(client, email_app, {
        "m": {"ChannelType": "EMAIL", "Address": "results@x.test", "User": {"UserId": "u"}},
    })
    response = send(client, email_app, {
        "MessageConfiguration": {"DefaultMessage": {"Body": "hi"}}, "Users": {"u": {}},
    })
    answer = _signed(api_url, "GET",
                     f"/v1/apps/{email_app}/users-messages/{response['RequestId']}")
    assert answer.status_code == 200
    outcome = answer.json()["Result"]["u"]["m"]
    assert outcome["DeliveryStatus"] == "SUCCESSFUL"
    assert outcome["Attempts"] == 1 and outcome["Final"] is True
    missing = _signed(api_url, "GET", f"/v1/apps/{email_app}/users-messages/nope")
    assert missing.status_code == 404


@pytest.mark.parametrize("users", [0, 101])
def test_users_must_number_1_to_100(client: Any, email_app: str, db: Engine, users: int) -> None:
    with db.connect() as conn:
        before = conn.execute(text("select count(*) from message_requests")).scalar()
    with pytest.raises(ClientError) as excinfo:
        send(client, email_app, {
            "MessageConfiguration": {"DefaultMessage": {"Body": "x"}},
            "Users": {f"u{i}": {} for i in range(users)},
        })
    status, code, message = error_of(excinfo)
    assert (status, code) == (400, "BadRequestException") and "100" in message
    with db.connect() as conn:
        assert conn.execute(text("select count(*) from message_requests")).scalar() == before


def test_body_over_7_mb_is_413(api_url: str, email_app: str) -> None:
    seven_mb = "x" * (7 * 1024 * 1024)
    body = json.dumps({"MessageConfiguration": {"DefaultMessage": {"Body": seven_mb}},
                       "Users": {"u": {}}}).encode()
    response = _signed(api_url, "POST", f"/v1/apps/{email_app}/users-messages", body)
    assert response.status_code == 413
    assert response.headers["X-Amzn-ErrorType"] == "PayloadTooLargeException"


def test_missing_message_configuration_is_400(api_url: str, email_app: str) -> None:
    response = _signed(api_url, "POST", f"/v1/apps/{email_app}/users-messages",
                       json.dumps({"Users": {"u": {}}}).encode())
    assert response.status_code == 400
    assert "MessageConfiguration" in response.json()["Message"]


def test_hundred_users_answered_in_one_response(
    client: Any, email_app: str, smtp: FakeSmtp
) -> None:
    register(client, email_app, {
        f"e{i}": {"ChannelType": "EMAIL", "Address": f"bulk{i}@x.test",
                  "User": {"UserId": f"bulk{i}"}} for i in range(100)
    })
    response = send(client, email_app, {
        "MessageConfiguration": {"DefaultMessage": {"Body": "bulk"}},
        "Users": {f"bulk{i}": {} for i in range(100)},
    })
    statuses = [o["DeliveryStatus"] for u in response["Result"].values() for o in u.values()]
    assert statuses == ["SUCCESSFUL"] * 100
    assert all(len(smtp.to(f"bulk{i}@x.test")) == 1 for i in range(100))
