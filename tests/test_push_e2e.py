"""Push channels end to end: boto3 → herald api → worker → APNs / FCM / ADM / Baidu fakes.

The adapters' every mapping row is tested against the fakes in test_provider_*.py; here the
pipeline around them: channel configuration through Pinpoint's operations, payloads as
Pinpoint built them, endpoints deactivated or re-addressed, retries honouring Retry-After.
"""

from __future__ import annotations

import json
import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.conftest import BUNDLE_ID, Fakes
from tests.fakes.apns import Reply, make_token_key
from tests.test_send_users import register, send

_TOKEN_KEY: dict[str, str] = {}


def device_token() -> str:
    return secrets.token_hex(32)


def apns_channel(client: Any, app_id: str, fakes: Fakes, operation: str = "update_apns_channel",
                 member: str = "APNSChannelRequest") -> None:
    key = _TOKEN_KEY.get("pem")
    if key is None:
        key = _TOKEN_KEY["pem"] = make_token_key()
        for fake in (fakes.apns, fakes.apns_sandbox):
            fake.register_token_key("KEY1234567", "TEAM123456", key)
    getattr(client, operation)(ApplicationId=app_id, **{member: {
        "TokenKey": key, "TokenKeyId": "KEY1234567", "TeamId": "TEAM123456",
        "BundleId": BUNDLE_ID, "DefaultAuthenticationMethod": "TOKEN", "Enabled": True}})


def requests_for(fake: Any, token: str) -> list[Any]:
    return [r for r in fake.requests if r.token == token]


def test_apns_payload_headers_and_stable_id(client: Any, app_id: str, fakes: Fakes,
                                            db: Engine) -> None:
    apns_channel(client, app_id, fakes)
    token = device_token()
    register(client, app_id, {"phone": {
        "ChannelType": "APNS", "Address": token,
        "User": {"UserId": "ios", "UserAttributes": {"FirstName": ["Ines"]}}}})
    response = send(client, app_id, {
        "MessageConfiguration": {
            "DefaultPushNotificationMessage": {"Title": "Default", "Body": "default body"},
            "APNSMessage": {"Title": "Hi {{User.UserAttributes.FirstName}}", "Sound": "ping",
                            "Badge": 3, "Url": "app://orders/7", "Action": "DEEP_LINK",
                            "Data": {"order": "7"}, "CollapseId": "orders",
                            "Priority": "normal", "TimeToLive": 0, "ThreadId": "t1"},
        },
        "Users": {"ios": {"Context": {"tag": "x"}}},
        "Context": {"campaign": "nov"},
    })
    outcome = response["Result"]["ios"]["phone"]
    assert outcome["DeliveryStatus"] == "SUCCESSFUL" and outcome["StatusCode"] == 200
    [request] = requests_for(fakes.apns, token)
    assert request.jwt_claims is not None and request.jwt_claims["iss"] == "TEAM123456"
    headers = request.headers
    assert headers["apns-topic"] == BUNDLE_ID and headers["apns-push-type"] == "alert"
    assert headers["apns-priority"] == "5" and headers["apns-expiration"] == "0"
    assert headers["apns-collapse-id"] == "orders"
    assert headers["apns-id"] == outcome["MessageId"]
    aps = request.payload["aps"]
    # Channel message over the default, substitutions from the endpoint record.
    assert aps["alert"] == {"title": "Hi Ines", "body": "default body"}
    assert aps["sound"] == "ping" and aps["badge"] == 3 and aps["thread-id"] == "t1"
    pinpoint = request.payload["data"]["pinpoint"]
    assert pinpoint["deeplink"] == "app://orders/7"
    assert pinpoint["campaign"] == "nov" and pinpoint["tag"] == "x"
    assert json.loads(pinpoint["jsonBody"]) == {"order": "7"}
    with db.connect() as conn:
        row = conn.execute(text("select message_id, channel_type from deliveries "
                                "where request_id = :r"), {"r": response["RequestId"]}).one()
    assert row.message_id == outcome["MessageId"] and row.channel_type == "APNS"


def test_apns_unregistered_token_deactivates_endpoint(client: Any, app_id: str,
                                                      fakes: Fakes) -> None:
    apns_channel(client, app_id, fakes)
    dead, alive = device_token(), device_token()
    fakes.apns.script(dead, [(410, "Unregistered")])
    register(client, app_id, {
        "dead": {"ChannelType": "APNS", "Address": dead, "User": {"UserId": "u"}},
        "alive": {"ChannelType": "APNS", "Address": alive, "User": {"UserId": "u"}},
    })
    response = send(client, app_id, {
        "MessageConfiguration": {"APNSMessage": {"Body": "hello"}}, "Users": {"u": {}}})
    failed = response["Result"]["u"]["dead"]
    assert failed["DeliveryStatus"] == "PERMANENT_FAILURE" and failed["StatusCode"] == 410
    detail = json.loads(failed["StatusMessage"])
    assert detail["channelType"] == "APNS" and detail["pushProviderStatusCode"] == "410"
    assert "Unregistered" in detail["pushProviderError"] + detail["errorMessage"]
    assert response["Result"]["u"]["alive"]["DeliveryStatus"] == "SUCCESSFUL"
    endpoint = client.get_endpoint(ApplicationId=app_id, EndpointId="dead")["EndpointResponse"]
    assert endpoint["EndpointStatus"] == "INACTIVE"
    # An INACTIVE endpoint is skipped by the next send.
    again = send(client, app_id, {
        "MessageConfiguration": {"APNSMessage": {"Body": "again"}}, "Users": {"u": {}}})
    assert set(again["Result"]["u"]) == {"alive"}
    assert len(requests_for(fakes.apns, dead)) == 1


def test_apns_sandbox_and_voip_routing(client: Any, app_id: str, fakes: Fakes) -> None:
    apns_channel(client, app_id, fakes, "update_apns_sandbox_channel",
                 "APNSSandboxChannelRequest")
    apns_channel(client, app_id, fakes, "update_apns_voip_channel", "APNSVoipChannelRequest")
    sandbox, voip = device_token(), device_token()
    register(client, app_id, {
        "dev": {"ChannelType": "APNS_SANDBOX", "Address": sandbox, "User": {"UserId": "u"}},
        "call": {"ChannelType": "APNS_VOIP", "Address": voip, "User": {"UserId": "u"}},
    })
    response = send(client, app_id, {
        "MessageConfiguration": {"DefaultPushNotificationMessage": {"Body": "ring"}},
        "Users": {"u": {}}})
    assert {o["DeliveryStatus"] for o in response["Result"]["u"].values()} == {"SUCCESSFUL"}
    assert requests_for(fakes.apns_sandbox, sandbox) and not requests_for(fakes.apns, sandbox)
    [call] = requests_for(fakes.apns, voip)
    assert call.headers["apns-topic"] == f"{BUNDLE_ID}.voip"
    assert call.headers["apns-push-type"] == "voip"


def test_throttled_then_successful_honours_retry_after(client: Any, app_id: str,
                                                       fakes: Fakes, db: Engine) -> None:
    apns_channel(client, app_id, fakes)
    token = device_token()
    fakes.apns.script(token, [Reply(429, "TooManyRequests", retry_after=1)])
    register(client, app_id, {"p": {"ChannelType": "APNS", "Address": token,
                                    "User": {"UserId": "u"}}})
    response = send(client, app_id, {
        "MessageConfiguration": {"APNSMessage": {"Body": "x"}}, "Users": {"u": {}}})
    assert response["Result"]["u"]["p"]["DeliveryStatus"] == "SUCCESSFUL"
    with db.connect() as conn:
        attempts = conn.execute(text(
            "select a.delivery_status, a.started_at from delivery_attempts a "
            "join deliveries d on d.id = a.delivery_id where d.request_id = :r "
            "order by a.attempt"), {"r": response["RequestId"]}).all()
    assert [a.delivery_status for a in attempts] == ["THROTTLED", "SUCCESSFUL"]
    first, second = (a.started_at for a in attempts)
    assert isinstance(first, datetime) and (second - first).total_seconds() >= 1.0
    first_id, second_id = (r.headers["apns-id"] for r in requests_for(fakes.apns, token))
    assert first_id == second_id  # the same apns-id on every attempt


def test_fcm_data_message_and_unregistered(client: Any, app_id: str, fakes: Fakes) -> None:
    account = fakes.fcm.add_service_account(project_id="herald-e2e")
    client.update_gcm_channel(ApplicationId=app_id, GCMChannelRequest={
        "ServiceJson": json.dumps(account), "DefaultAuthenticationMethod": "TOKEN",
        "Enabled": True})
    good, gone = "fcm-" + secrets.token_hex(8), "fcm-" + secrets.token_hex(8)
    fakes.fcm.fail(gone, "UNREGISTERED")
    register(client, app_id, {
        "good": {"ChannelType": "GCM", "Address": good, "User": {"UserId": "droid"}},
        "gone": {"ChannelType": "GCM", "Address": gone, "User": {"UserId": "droid"}},
    })
    response = send(client, app_id, {
        "MessageConfiguration": {"GCMMessage": {
            "Title": "T", "Body": "B {{Who}}", "Priority": "high", "TimeToLive": 60,
            "Substitutions": {"Who": ["you"]}, "Data": {"k": "v"}}},
        "Users": {"droid": {}}})
    result = response["Result"]["droid"]
    assert result["good"]["DeliveryStatus"] == "SUCCESSFUL"
    assert result["good"]["MessageId"].startswith("projects/herald-e2e/messages/")
    sent = next(r for r in fakes.fcm.sends() if json.loads(r.body)["message"]["token"] == good)
    message = json.loads(sent.body)["message"]
    assert message["data"]["pinpoint.notification.title"] == "T"
    assert message["data"]["pinpoint.notification.body"] == "B you"
    assert json.loads(message["data"]["pinpoint.jsonBody"]) == {"k": "v"}
    assert message["android"]["priority"] == "high" and message["android"]["ttl"] == "60s"
    assert result["gone"]["DeliveryStatus"] == "PERMANENT_FAILURE"
    endpoint = client.get_endpoint(ApplicationId=app_id, EndpointId="gone")["EndpointResponse"]
    assert endpoint["EndpointStatus"] == "INACTIVE"


def test_adm_canonical_registration_updates_the_endpoint(client: Any, app_id: str,
                                                         fakes: Fakes) -> None:
    client.update_adm_channel(ApplicationId=app_id, ADMChannelRequest={
        "ClientId": fakes.adm.client_id, "ClientSecret": fakes.adm.client_secret})
    old, new = "amzn1.adm-registration." + secrets.token_hex(6), "amzn1.adm-new." + "c" * 12
    fakes.adm.canonicalize(old, new)
    register(client, app_id, {"kindle": {"ChannelType": "ADM", "Address": old,
                                         "User": {"UserId": "k"}}})
    response = send(client, app_id, {
        "MessageConfiguration": {"ADMMessage": {"Title": "t", "Body": "b",
                                                "ConsolidationKey": "c1"}},
        "Users": {"k": {}}})
    outcome = response["Result"]["k"]["kindle"]
    assert outcome["DeliveryStatus"] == "SUCCESSFUL" and outcome["UpdatedToken"] == new
    endpoint = client.get_endpoint(ApplicationId=app_id, EndpointId="kindle")["EndpointResponse"]
    assert endpoint["Address"] == new


def test_baidu_signed_push(client: Any, app_id: str, fakes: Fakes) -> None:
    client.update_baidu_channel(ApplicationId=app_id, BaiduChannelRequest={
        "ApiKey": fakes.baidu.api_key, "SecretKey": fakes.baidu.secret_key})
    channel_id = str(secrets.randbelow(10**18))
    register(client, app_id, {"b": {"ChannelType": "BAIDU", "Address": channel_id,
                                    "User": {"UserId": "bd"}}})
    response = send(client, app_id, {
        "MessageConfiguration": {"BaiduMessage": {"Title": "标题", "Body": "内容"}},
        "Users": {"bd": {}}})
    outcome = response["Result"]["bd"]["b"]
    assert outcome["DeliveryStatus"] == "SUCCESSFUL", outcome
    pushed = [p for p in fakes.baidu.pushes() if p.form().get("channel_id") == channel_id]
    assert len(pushed) == 1
    assert json.loads(pushed[0].form()["msg"])["title"] == "标题"
