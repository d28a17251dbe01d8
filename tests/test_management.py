"""The management operations through boto3, as Pinpoint users call them."""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from botocore.exceptions import ClientError
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.keys import p8_key, service_account_json


def error_of(excinfo: pytest.ExceptionInfo[ClientError]) -> tuple[int, str, str]:
    response = excinfo.value.response
    return (
        response["ResponseMetadata"]["HTTPStatusCode"],
        response["Error"]["Code"],
        response["Error"]["Message"],
    )


# --- applications ----------------------------------------------------------------------------


def test_create_get_delete_app(client: Any) -> None:
    created = client.create_app(
        CreateApplicationRequest={"Name": "shop", "tags": {"team": "growth"}}
    )
    assert created["ResponseMetadata"]["HTTPStatusCode"] == 201
    app = created["ApplicationResponse"]
    assert app["Name"] == "shop" and app["tags"] == {"team": "growth"}
    assert len(app["Id"]) == 32
    assert app["Arn"].endswith(f":apps/{app['Id']}") and app["CreationDate"].endswith("Z")
    assert client.get_app(ApplicationId=app["Id"])["ApplicationResponse"] == app
    deleted = client.delete_app(ApplicationId=app["Id"])["ApplicationResponse"]
    assert deleted["Id"] == app["Id"]
    with pytest.raises(ClientError) as excinfo:
        client.get_app(ApplicationId=app["Id"])
    assert error_of(excinfo)[:2] == (404, "NotFoundException")


def test_get_apps_pages_with_token(client: Any) -> None:
    ids = {
        client.create_app(CreateApplicationRequest={"Name": f"page-{i}"})[
            "ApplicationResponse"]["Id"]
        for i in range(5)
    }
    seen: list[str] = []
    token = None
    while True:
        kwargs = {"PageSize": "2"} | ({"Token": token} if token else {})
        page = client.get_apps(**kwargs)["ApplicationsResponse"]
        assert len(page["Item"]) <= 2
        seen += [item["Id"] for item in page["Item"]]
        token = page.get("NextToken")
        if not token:
            break
    assert ids <= set(seen)
    assert len(seen) == len(set(seen))


def test_get_apps_rejects_bad_page_size(client: Any) -> None:
    with pytest.raises(ClientError) as excinfo:
        client.get_apps(PageSize="zero")
    assert error_of(excinfo)[:2] == (400, "BadRequestException")


def test_create_app_requires_name(api_url: str, client: Any) -> None:
    with pytest.raises(ClientError) as excinfo:
        client.create_app(CreateApplicationRequest={"Name": ""})
    status, code, message = error_of(excinfo)
    assert (status, code) == (400, "BadRequestException") and "Name" in message


def test_delete_app_removes_endpoints_and_channels(client: Any, email_app: str, db: Engine) -> None:
    client.update_endpoint(ApplicationId=email_app, EndpointId="e1",
                           EndpointRequest={"ChannelType": "EMAIL", "Address": "a@b.test"})
    client.delete_app(ApplicationId=email_app)
    with db.connect() as conn:
        for table in ("endpoints", "channels"):
            count = conn.execute(
                text(f"select count(*) from {table} where app_id = :a"), {"a": email_app}
            ).scalar()
            assert count == 0, table


# --- endpoints -----------------------------------------------------------------------------------


def test_update_and_get_endpoint_round_trip(client: Any, app_id: str) -> None:
    request = {
        "ChannelType": "APNS",
        "Address": "a" * 64,
        "Attributes": {"interests": ["shoes", "hats"]},
        "Metrics": {"visits": 3.0},
        "Demographic": {"Platform": "ios", "Locale": "en_US"},
        "Location": {"City": "Lyon", "Latitude": 45.76},
        "OptOut": "NONE",
        "User": {"UserId": "u-1", "UserAttributes": {"FirstName": ["Ada"]}},
    }
    answer = client.update_endpoint(ApplicationId=app_id, EndpointId="ep-1",
                                    EndpointRequest=request)
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert answer["MessageBody"]["Message"] == "Accepted"
    endpoint = client.get_endpoint(ApplicationId=app_id, EndpointId="ep-1")["EndpointResponse"]
    assert endpoint["Id"] == "ep-1" and endpoint["ApplicationId"] == app_id
    assert endpoint["ChannelType"] == "APNS" and endpoint["Address"] == "a" * 64
    assert endpoint["Attributes"] == {"interests": ["shoes", "hats"]}
    assert endpoint["Metrics"] == {"visits": 3.0}
    assert endpoint["Demographic"] == {"Platform": "ios", "Locale": "en_US"}
    assert endpoint["Location"]["City"] == "Lyon"
    assert endpoint["User"] == {"UserId": "u-1", "UserAttributes": {"FirstName": ["Ada"]}}
    assert endpoint["EndpointStatus"] == "ACTIVE" and endpoint["OptOut"] == "NONE"
    assert endpoint["CreationDate"].endswith("Z") and "CohortId" in endpoint

    # An update merges: new attribute keys add, given members replace.
    client.update_endpoint(ApplicationId=app_id, EndpointId="ep-1",
                           EndpointRequest={"Attributes": {"tier": ["gold"]}, "OptOut": "ALL"})
    endpoint = client.get_endpoint(ApplicationId=app_id, EndpointId="ep-1")["EndpointResponse"]
    assert endpoint["Attributes"] == {"interests": ["shoes", "hats"], "tier": ["gold"]}
    assert endpoint["OptOut"] == "ALL" and endpoint["Address"] == "a" * 64


def test_batch_user_endpoints_and_deletes(client: Any, app_id: str) -> None:
    items = [
        {"Id": "mail", "ChannelType": "EMAIL", "Address": "ada@x.test", "User": {"UserId": "ada"}},
        {"Id": "phone", "ChannelType": "SMS", "Address": "+33612345678", "User": {"UserId": "ada"}},
        {"Id": "other", "ChannelType": "EMAIL", "Address": "bob@x.test", "User": {"UserId": "bob"}},
    ]
    answer = client.update_endpoints_batch(ApplicationId=app_id,
                                           EndpointBatchRequest={"Item": items})
    assert answer["ResponseMetadata"]["HTTPStatusCode"] == 202
    ada = client.get_user_endpoints(ApplicationId=app_id, UserId="ada")["EndpointsResponse"]
    assert sorted(e["Id"] for e in ada["Item"]) == ["mail", "phone"]

    deleted = client.delete_endpoint(ApplicationId=app_id, EndpointId="phone")
    assert deleted["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert deleted["EndpointResponse"]["Id"] == "phone"
    with pytest.raises(ClientError) as excinfo:
        client.get_endpoint(ApplicationId=app_id, EndpointId="phone")
    assert error_of(excinfo)[:2] == (404, "NotFoundException")

    gone = client.delete_user_endpoints(ApplicationId=app_id, UserId="ada")
    assert gone["ResponseMetadata"]["HTTPStatusCode"] == 202
    assert [e["Id"] for e in gone["EndpointsResponse"]["Item"]] == ["mail"]
    with pytest.raises(ClientError) as excinfo:
        client.get_user_endpoints(ApplicationId=app_id, UserId="ada")
    assert error_of(excinfo)[:2] == (404, "NotFoundException")
    assert client.get_endpoint(ApplicationId=app_id, EndpointId="other")


def _count_endpoints(db: Engine, app_id: str) -> int:
    with db.connect() as conn:
        return int(conn.execute(text("select count(*) from endpoints where app_id = :a"),
                                {"a": app_id}).scalar() or 0)


@pytest.mark.parametrize(
    ("endpoint_id", "request_body", "needle"),
    [
        ("bad$id", {"ChannelType": "EMAIL", "Address": "a@b.test"}, "Endpoint Id"),
        ("bad{id}", {"ChannelType": "EMAIL", "Address": "a@b.test"}, "Endpoint Id"),
        ("ok", {"ChannelType": "PIGEON", "Address": "a@b.test"}, "ChannelType"),
        ("ok", {"ChannelType": "EMAIL", "Address": 42}, "Address"),
        ("ok", {"ChannelType": "EMAIL", "Attributes": {"x" * 51: ["v"]}}, "Attributes"),
        ("ok", {"ChannelType": "EMAIL", "Attributes": {"k": ["v" * 101]}}, "100"),
        ("ok", {"ChannelType": "EMAIL",
                "Attributes": {f"a{i}": ["v"] for i in range(251)}}, "250"),
        ("ok", {"ChannelType": "EMAIL", "OptOut": "SOMETIMES"}, "OptOut"),
        ("ok", {"Address": "a@b.test"}, "ChannelType"),
    ],
)
def test_bad_endpoint_requests_are_400_and_write_nothing(
    api_url: str, app_id: str, db: Engine, endpoint_id: str, request_body: dict[str, Any],
    needle: str,
) -> None:
    # Raw signed HTTP: boto3 would refuse some of these before sending; other SDKs do not.
    response = _signed(api_url, "PUT", f"/v1/apps/{app_id}/endpoints/{quote(endpoint_id)}",
                       json.dumps(request_body).encode())
    assert response.status_code == 400
    assert response.headers["X-Amzn-ErrorType"] == "BadRequestException"
    assert needle in response.json()["Message"]
    assert _count_endpoints(db, app_id) == 0


def test_sixteenth_endpoint_of_a_user_is_refused(client: Any, app_id: str, db: Engine) -> None:
    items = [{"Id": f"e{i}", "ChannelType": "EMAIL", "Address": f"u{i}@x.test",
              "User": {"UserId": "many"}} for i in range(15)]
    client.update_endpoints_batch(ApplicationId=app_id, EndpointBatchRequest={"Item": items})
    with pytest.raises(ClientError) as excinfo:
        client.update_endpoint(ApplicationId=app_id, EndpointId="e15", EndpointRequest={
            "ChannelType": "EMAIL", "Address": "u15@x.test", "User": {"UserId": "many"}})
    status, code, message = error_of(excinfo)
    assert (status, code) == (400, "BadRequestException") and "15" in message
    assert _count_endpoints(db, app_id) == 15


def test_batch_over_100_items_or_partly_bad_writes_nothing(
    client: Any, app_id: str, db: Engine
) -> None:
    items = [{"Id": f"e{i}", "ChannelType": "EMAIL", "Address": f"u{i}@x.test"}
             for i in range(101)]
    with pytest.raises(ClientError) as excinfo:
        client.update_endpoints_batch(ApplicationId=app_id, EndpointBatchRequest={"Item": items})
    assert error_of(excinfo)[:2] == (400, "BadRequestException")
    items = [*items[:3], {"Id": "bad$", "ChannelType": "EMAIL", "Address": "z@x.test"}]
    with pytest.raises(ClientError) as excinfo:
        client.update_endpoints_batch(ApplicationId=app_id, EndpointBatchRequest={"Item": items})
    assert error_of(excinfo)[:2] == (400, "BadRequestException")
    assert _count_endpoints(db, app_id) == 0


def test_unknown_app_is_404_for_every_kind_of_call(client: Any) -> None:
    missing = uuid.uuid4().hex
    calls = [
        lambda: client.get_app(ApplicationId=missing),
        lambda: client.update_endpoint(ApplicationId=missing, EndpointId="e",
                                       EndpointRequest={"ChannelType": "EMAIL"}),
        lambda: client.get_user_endpoints(ApplicationId=missing, UserId="u"),
        lambda: client.get_channels(ApplicationId=missing),
        lambda: client.update_sms_channel(ApplicationId=missing, SMSChannelRequest={}),
        lambda: client.send_users_messages(ApplicationId=missing, SendUsersMessageRequest={
            "MessageConfiguration": {"DefaultMessage": {"Body": "x"}}, "Users": {"u": {}}}),
    ]
    for call in calls:
        with pytest.raises(ClientError) as excinfo:
            call()
        assert error_of(excinfo)[:2] == (404, "NotFoundException")
        assert excinfo.value.response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]


# --- channels ------------------------------------------------------------------------------------


def test_every_channel_can_be_set_read_and_deleted(client: Any, app_id: str) -> None:
    token_key = p8_key()
    apns = {"TokenKey": token_key, "TokenKeyId": "ABC123DEFG", "TeamId": "TEAM123456",
            "BundleId": "com.example.app", "DefaultAuthenticationMethod": "TOKEN",
            "Enabled": True}
    service_json = service_account_json("http://127.0.0.1:1/token")
    channels = {
        "apns": ("update_apns_channel", "APNSChannelRequest", apns, "APNS"),
        "apns_sandbox": ("update_apns_sandbox_channel", "APNSSandboxChannelRequest", apns,
                         "APNS_SANDBOX"),
        "apns_voip": ("update_apns_voip_channel", "APNSVoipChannelRequest", apns, "APNS_VOIP"),
        "apns_voip_sandbox": ("update_apns_voip_sandbox_channel",
                              "APNSVoipSandboxChannelRequest", apns, "APNS_VOIP_SANDBOX"),
        "gcm": ("update_gcm_channel", "GCMChannelRequest",
                {"ServiceJson": service_json, "DefaultAuthenticationMethod": "TOKEN",
                 "Enabled": True}, "GCM"),
        "baidu": ("update_baidu_channel", "BaiduChannelRequest",
                  {"ApiKey": "baidu-api-key", "SecretKey": "baidu-secret"}, "BAIDU"),
        "adm": ("update_adm_channel", "ADMChannelRequest",
                {"ClientId": "amzn1.client", "ClientSecret": "adm-secret"}, "ADM"),
        "email": ("update_email_channel", "EmailChannelRequest",
                  {"FromAddress": "a@b.test", "Identity": "b.test"}, "EMAIL"),
        "sms": ("update_sms_channel", "SMSChannelRequest", {"SenderId": "HERALD"}, "SMS"),
        "voice": ("update_voice_channel", "VoiceChannelRequest", {"Enabled": True}, "VOICE"),
    }
    secrets = {"baidu-secret", "adm-secret", "baidu-api-key", token_key[30:60]}
    for path, (operation, member, body, platform) in channels.items():
        answer = getattr(client, operation)(ApplicationId=app_id, **{member: body})
        response = next(v for k, v in answer.items() if k != "ResponseMetadata")
        assert response["Platform"] == platform and response["Enabled"] is True
        assert response["Version"] == 1 and response["ApplicationId"] == app_id
        assert response["HasCredential"] is True
        text_of = json.dumps(response)
        assert not any(s in text_of for s in secrets), path
        suffix = operation[len("update_"):]
        got = getattr(client, "get_" + suffix)(ApplicationId=app_id)
        assert next(v for k, v in got.items() if k != "ResponseMetadata")["Platform"] == platform
    everything = client.get_channels(ApplicationId=app_id)["ChannelsResponse"]["Channels"]
    assert set(everything) == {c[3] for c in channels.values()}
    apns_channel = client.get_apns_channel(ApplicationId=app_id)["APNSChannelResponse"]
    assert apns_channel["HasTokenKey"] is True
    assert apns_channel["DefaultAuthenticationMethod"] == "TOKEN"
    assert not any(s in json.dumps(everything) for s in secrets)

    # Updating keeps the other members, bumps the version, can disable.
    sms = client.update_sms_channel(ApplicationId=app_id,
                                    SMSChannelRequest={"Enabled": False})["SMSChannelResponse"]
    assert sms["Enabled"] is False and sms["SenderId"] == "HERALD" and sms["Version"] == 2

    for operation, *_rest in channels.values():
        getattr(client, "delete_" + operation[len("update_"):])(ApplicationId=app_id)
    assert client.get_channels(ApplicationId=app_id)["ChannelsResponse"]["Channels"] == {}
    with pytest.raises(ClientError) as excinfo:
        client.get_apns_channel(ApplicationId=app_id)
    assert error_of(excinfo)[:2] == (404, "NotFoundException")


def test_channel_secrets_are_encrypted_at_rest(client: Any, app_id: str, db: Engine) -> None:
    client.update_adm_channel(ApplicationId=app_id, ADMChannelRequest={
        "ClientId": "amzn1.client", "ClientSecret": "very-secret-adm-value"})
    with db.connect() as conn:
        row = conn.execute(text("select settings::text, secrets from channels where app_id=:a"),
                           {"a": app_id}).one()
    assert b"very-secret-adm-value" not in bytes(row.secrets)
    assert "very-secret-adm-value" not in row.settings


@pytest.mark.parametrize(
    ("operation", "member", "body", "needle"),
    [
        ("update_apns_channel", "APNSChannelRequest", {"TokenKey": "not a key",
         "TokenKeyId": "K", "TeamId": "T", "BundleId": "b"}, "TokenKey"),
        ("update_apns_channel", "APNSChannelRequest", {"BundleId": "b"}, "Certificate"),
        ("update_gcm_channel", "GCMChannelRequest", {"ServiceJson": "{nope"}, "ServiceJson"),
        ("update_email_channel", "EmailChannelRequest",
         {"FromAddress": "not-an-address", "Identity": "x"}, "FromAddress"),
        ("update_email_channel", "EmailChannelRequest",
         {"FromAddress": "a@b.test\r\nBcc: evil@x.test", "Identity": "x"}, "FromAddress"),
    ],
)
def test_bad_channel_settings_are_400(
    client: Any, app_id: str, operation: str, member: str, body: dict[str, Any], needle: str
) -> None:
    with pytest.raises(ClientError) as excinfo:
        getattr(client, operation)(ApplicationId=app_id, **{member: body})
    status, code, message = error_of(excinfo)
    assert (status, code) == (400, "BadRequestException") and needle in message
    assert client.get_channels(ApplicationId=app_id)["ChannelsResponse"]["Channels"] == {}


# --- raw HTTP: errors that boto3 cannot produce ----------------------------------------------


def _signed(api_url: str, method: str, path: str, body: bytes = b"",
            headers: dict[str, str] | None = None) -> httpx.Response:
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    from tests.stack import ROOT_KEY_ID, ROOT_SECRET

    request = AWSRequest(method=method, url=api_url + path, data=body,
                         headers={"Content-Type": "application/json", **(headers or {})})
    SigV4Auth(Credentials(ROOT_KEY_ID, ROOT_SECRET), "mobiletargeting", "us-east-1").add_auth(
        request)
    return httpx.request(method, api_url + path, content=body, headers=dict(request.headers))


def test_unknown_members_are_ignored(api_url: str, app_id: str, client: Any) -> None:
    body = {"ChannelType": "EMAIL", "Address": "a@b.test", "SomethingNew": {"Nested": 1}}
    response = _signed(api_url, "PUT", f"/v1/apps/{app_id}/endpoints/e1",
                       json.dumps(body).encode())
    assert response.status_code == 202
    endpoint = client.get_endpoint(ApplicationId=app_id, EndpointId="e1")["EndpointResponse"]
    assert "SomethingNew" not in endpoint


def test_malformed_json_is_400(api_url: str, app_id: str) -> None:
    response = _signed(api_url, "PUT", f"/v1/apps/{app_id}/endpoints/e1", b"{not json")
    assert response.status_code == 400
    assert response.headers["X-Amzn-ErrorType"] == "BadRequestException"
    body = response.json()
    assert set(body) == {"Message", "RequestID"}
    assert body["RequestID"] == response.headers["x-amzn-RequestId"]


def test_wrong_method_is_405_and_options_lists_methods(api_url: str, app_id: str) -> None:
    response = _signed(api_url, "PATCH", f"/v1/apps/{app_id}/users-messages", b"{}")
    assert response.status_code == 405
    assert response.headers["X-Amzn-ErrorType"] == "MethodNotAllowedException"
    options = httpx.options(api_url + f"/v1/apps/{app_id}/users-messages")
    assert options.status_code == 200
    assert options.headers["Allow"] == "OPTIONS, POST"
    assert options.headers["Access-Control-Allow-Origin"] == "*"
    endpoint_options = httpx.options(api_url + f"/v1/apps/{app_id}/endpoints/e1")
    assert endpoint_options.headers["Allow"] == "DELETE, GET, OPTIONS, PUT"
