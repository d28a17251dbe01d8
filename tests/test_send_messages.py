"""SendMessages: direct sends to addresses and endpoint ids, on the same pipeline."""

from __future__ import annotations

import json
from typing import Any

import pytest
from botocore.exceptions import ClientError
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.fakes.smtp import FakeSmtp
from tests.test_management import _signed, error_of
from tests.test_send_users import register


def send(client: Any, app_id: str, request: dict[str, Any]) -> dict[str, Any]:
    return client.send_messages(ApplicationId=app_id, MessageRequest=request)["MessageResponse"]


def test_addresses_and_endpoints_in_one_call(
    client: Any, email_app: str, smtp: FakeSmtp, api_url: str
) -> None:
    register(client, email_app, {
        "known": {"ChannelType": "EMAIL", "Address": "known@x.test",
                  "User": {"UserId": "k", "UserAttributes": {"FirstName": ["Kim"]}}},
    })
    response = send(client, email_app, {
        "Addresses": {
            "direct@x.test": {"ChannelType": "EMAIL", "Substitutions": {"Name": ["Dee"]},
                              "TitleOverride": "For {{Name}}"},
            "KNOWN@x.test": {"ChannelType": "EMAIL"},
        },
        "Endpoints": {"known": {}, "ghost": {}},
        "MessageConfiguration": {"EmailMessage": {"SimpleEmail": {
            "Subject": {"Data": "Hi {{User.UserAttributes.FirstName}}{{Name}}"},
            "TextPart": {"Data": "text for {{Name}}{{User.UserAttributes.FirstName}}"}}}},
    })
    assert response["ApplicationId"] == email_app and response["RequestId"]
    direct = response["Result"]["direct@x.test"]
    assert direct["DeliveryStatus"] == "SUCCESSFUL" and direct["StatusCode"] == 250
    assert "Address" not in direct  # MessageResult has no Address member
    # The same address as an endpoint in one request: one delivery.
    assert response["Result"]["KNOWN@x.test"]["DeliveryStatus"] == "SUCCESSFUL"
    known = response["EndpointResult"]["known"]
    assert known["DeliveryStatus"] == "DUPLICATE" and known["Address"] == "known@x.test"
    ghost = response["EndpointResult"]["ghost"]
    assert ghost["DeliveryStatus"] == "PERMANENT_FAILURE" and ghost["StatusCode"] == 404

    message = smtp.to("direct@x.test")[-1].message
    # Address sends have no endpoint record: variables come from Substitutions only.
    assert message["Subject"] == "For Dee"
    assert message.get_body(("plain",)).get_content().strip() == "text for Dee"

    extension = _signed(api_url, "GET", f"/v1/apps/{email_app}/messages/{response['RequestId']}")
    assert extension.status_code == 200
    body = extension.json()
    assert body["Result"]["direct@x.test"]["Final"] is True
    assert body["EndpointResult"]["known"]["Attempts"] == 0


def test_endpoint_sends_use_the_endpoint_record(
    client: Any, email_app: str, smtp: FakeSmtp
) -> None:
    register(client, email_app, {
        "rec": {"ChannelType": "EMAIL", "Address": "record@x.test",
                "Attributes": {"city": ["Oslo"]}, "User": {"UserId": "r"}},
    })
    response = send(client, email_app, {
        "Endpoints": {"rec": {"BodyOverride": "weather in {{Attributes.city}}"}},
        "MessageConfiguration": {"DefaultMessage": {"Body": "default"}},
    })
    assert response["EndpointResult"]["rec"]["DeliveryStatus"] == "SUCCESSFUL"
    assert smtp.to("record@x.test")[-1].message.get_content().strip() == "weather in Oslo"


@pytest.mark.parametrize(
    ("addresses", "needle"),
    [
        ({"a@x.test": {}}, "ChannelType"),
        ({"not-an-email": {"ChannelType": "EMAIL"}}, "not an e-mail address"),
        ({"12345": {"ChannelType": "SMS"}}, "E.164"),
        ({"to ken": {"ChannelType": "APNS"}}, "device token"),
        ({f"u{i}@x.test": {"ChannelType": "EMAIL"} for i in range(101)}, "100"),
        ({}, "recipients"),
    ],
)
def test_bad_address_requests_are_400_and_write_nothing(
    client: Any, email_app: str, db: Engine, addresses: dict[str, Any], needle: str
) -> None:
    with db.connect() as conn:
        before = conn.execute(text("select count(*) from message_requests")).scalar()
    with pytest.raises(ClientError) as excinfo:
        send(client, email_app, {"Addresses": addresses,
                                 "MessageConfiguration": {"DefaultMessage": {"Body": "x"}}})
    status, code, message = error_of(excinfo)
    assert (status, code) == (400, "BadRequestException") and needle in message
    with db.connect() as conn:
        assert conn.execute(text("select count(*) from message_requests")).scalar() == before


def test_results_extension_refuses_the_other_kind(client: Any, email_app: str,
                                                  api_url: str) -> None:
    response = send(client, email_app, {
        "Addresses": {"kind@x.test": {"ChannelType": "EMAIL"}},
        "MessageConfiguration": {"DefaultMessage": {"Body": "x"}},
    })
    wrong = _signed(api_url, "GET",
                    f"/v1/apps/{email_app}/users-messages/{response['RequestId']}")
    assert wrong.status_code == 404
    assert json.loads(wrong.content)["Message"]
