"""Who may call Herald: SigV4 on every route, access keys scoped to apps, revocation, and
the AWS CLI and boto3 as clients — against the live stack.

Requests that boto3 would never build (tampered bodies, stale dates, wrong scopes) are signed
with botocore's own SigV4Auth and sent raw with httpx.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import secrets
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import botocore.auth
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.conftest import BUNDLE_ID, Fakes, provider_env
from tests.fakes.apns import make_token_key
from tests.fakes.smtp import FakeSmtp
from tests.stack import (
    ARTIFACTS,
    ROOT_KEY_ID,
    ROOT_SECRET,
    SECRET_KEY,
    VENV_BIN,
    Stack,
    pinpoint,
)

KEY_CACHE_TTL_S = 5.0  # worker.management.access_keys.KeyStore's default
_SIGNATURE = re.compile(r"Signature=([0-9a-f]{64})")


def create_key(stack: Stack, *apps: str) -> tuple[str, str]:
    args = [arg for app in apps for arg in ("--app", app)]
    out = stack.run("keys", "create", *args, "--description", "test key").stdout
    values = dict(line.split("=", 1) for line in out.split())
    return values["AWS_ACCESS_KEY_ID"], values["AWS_SECRET_ACCESS_KEY"]


def signed_headers(
    url: str, method: str, path: str, body: bytes = b"", *, key: str = ROOT_KEY_ID,
    secret: str = ROOT_SECRET, region: str = "us-east-1", service: str = "mobiletargeting",
    headers: dict[str, str] | None = None,
) -> dict[str, str]:
    request = AWSRequest(method=method, url=url + path, data=body,
                         headers={"Content-Type": "application/json", **(headers or {})})
    SigV4Auth(Credentials(key, secret), service, region).add_auth(request)
    return dict(request.headers)


def send(url: str, method: str, path: str, body: bytes = b"",
         headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.request(method, url + path, content=body, headers=headers or {}, timeout=30)


def assert_forbidden(response: httpx.Response, needle: str = "") -> str:
    """A Pinpoint-shaped 403; returns its message."""
    assert response.status_code == 403, response.text
    assert response.headers["X-Amzn-ErrorType"] == "ForbiddenException"
    body = response.json()
    assert set(body) == {"Message", "RequestID"}
    assert body["RequestID"] == response.headers["x-amzn-RequestId"]
    assert needle in body["Message"], body["Message"]
    return str(body["Message"])


def assert_client_forbidden(excinfo: pytest.ExceptionInfo[ClientError]) -> None:
    response = excinfo.value.response
    assert response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert response["Error"]["Code"] == "ForbiddenException"
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-errortype"] == (
        "ForbiddenException")
    assert response["ResponseMetadata"]["HTTPHeaders"]["x-amzn-requestid"]


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Sets the time botocore signs with (its seam: ``botocore.auth.get_current_datetime``)."""

    def set_to(moment: datetime) -> None:
        naive = moment.astimezone(UTC).replace(tzinfo=None)
        monkeypatch.setattr(botocore.auth, "get_current_datetime",
                            lambda remove_tzinfo=True: naive)

    return set_to


# --- access keys scoped to apps ------------------------------------------------------------


def test_key_scoped_to_an_app_may_use_that_app_only(
    stack: Stack, api_url: str, client: Any
) -> None:
    mine = client.create_app(CreateApplicationRequest={"Name": "mine"})["ApplicationResponse"]
    other = client.create_app(CreateApplicationRequest={"Name": "other"})["ApplicationResponse"]
    key_id, secret = create_key(stack, mine["Id"])
    scoped = pinpoint(api_url, key_id, secret)

    assert scoped.get_app(ApplicationId=mine["Id"])["ApplicationResponse"] == mine
    scoped.update_endpoint(ApplicationId=mine["Id"], EndpointId="e1", EndpointRequest={
        "ChannelType": "EMAIL", "Address": "a@x.test", "User": {"UserId": "u"}})
    assert scoped.get_user_endpoints(ApplicationId=mine["Id"], UserId="u")

    refused = [
        lambda: scoped.get_app(ApplicationId=other["Id"]),
        lambda: scoped.delete_app(ApplicationId=other["Id"]),
        lambda: scoped.get_channels(ApplicationId=other["Id"]),
        lambda: scoped.update_endpoint(ApplicationId=other["Id"], EndpointId="e1",
                                       EndpointRequest={"ChannelType": "EMAIL"}),
        lambda: scoped.send_users_messages(ApplicationId=other["Id"], SendUsersMessageRequest={
            "MessageConfiguration": {"DefaultMessage": {"Body": "x"}}, "Users": {"u": {}}}),
        lambda: scoped.send_messages(ApplicationId=other["Id"], MessageRequest={
            "MessageConfiguration": {"DefaultMessage": {"Body": "x"}}, "Endpoints": {"e": {}}}),
        # An app that does not exist is refused the same way: no existence oracle.
        lambda: scoped.get_app(ApplicationId=uuid.uuid4().hex),
        lambda: scoped.create_app(CreateApplicationRequest={"Name": "mine-too"}),
    ]
    for call in refused:
        with pytest.raises(ClientError) as excinfo:
            call()
        assert_client_forbidden(excinfo)
    assert client.get_app(ApplicationId=other["Id"])["ApplicationResponse"] == other


def test_get_apps_with_a_scoped_key_shows_and_leaks_no_other_app(
    stack: Stack, api_url: str, client: Any
) -> None:
    for i in range(3):
        client.create_app(CreateApplicationRequest={"Name": f"someone-else-{i}"})
    mine = client.create_app(CreateApplicationRequest={"Name": "mine"})["ApplicationResponse"]
    scoped = pinpoint(api_url, *create_key(stack, mine["Id"]))
    seen: list[str] = []
    tokens: list[str] = []
    token = None
    while True:
        page = scoped.get_apps(PageSize="1", **({"Token": token} if token else {}))[
            "ApplicationsResponse"]
        seen += [item["Id"] for item in page["Item"]]
        token = page.get("NextToken")
        if not token:
            break
        tokens.append(token)
    assert seen == [mine["Id"]]
    # A page token is the last id seen: it must never name an app the key may not use.
    for token in tokens:
        assert base64.urlsafe_b64decode(token).decode() == mine["Id"]


def test_keys_list_never_prints_secrets_and_secrets_are_encrypted_at_rest(
    stack: Stack, app_id: str, db: Engine
) -> None:
    scoped_id, scoped_secret = create_key(stack, app_id)
    root_like_id, root_like_secret = create_key(stack)
    listing = stack.run("keys", "list")
    for key_id in (scoped_id, root_like_id):
        assert key_id in listing.stdout
    for secret in (scoped_secret, root_like_secret):
        assert secret not in listing.stdout and secret not in listing.stderr
    line = next(line for line in listing.stdout.splitlines() if line.startswith(scoped_id))
    assert app_id in line and "active" in line
    with db.connect() as conn:
        stored = conn.execute(text("select secret from access_keys where id = :k"),
                              {"k": scoped_id}).scalar_one()
    assert scoped_secret.encode() not in bytes(stored)
    for log in ARTIFACTS.glob(f"{stack.name}-*.log"):
        content = log.read_text(errors="replace")
        assert scoped_secret not in content and root_like_secret not in content, log


def test_revoked_key_is_refused_within_the_cache_ttl(
    stack: Stack, api_url: str, app_id: str
) -> None:
    key_id, secret = create_key(stack, app_id)
    path = f"/v1/apps/{app_id}"
    assert send(api_url, "GET", path,
                headers=signed_headers(api_url, "GET", path, key=key_id, secret=secret)
                ).status_code == 200
    stack.run("keys", "revoke", key_id)
    revoked_at = time.monotonic()
    while True:  # every API process caches keys for KEY_CACHE_TTL_S
        response = send(api_url, "GET", path,
                        headers=signed_headers(api_url, "GET", path, key=key_id, secret=secret))
        if response.status_code != 200:
            break
        assert time.monotonic() - revoked_at < KEY_CACHE_TTL_S + 5, "revoked key still works"
        time.sleep(0.2)
    assert_forbidden(response, "security token")
    listed = stack.run("keys", "list").stdout
    assert f"{key_id}\trevoked" in listed


def test_revoking_an_unknown_key_fails_cleanly(stack: Stack) -> None:
    with pytest.raises(subprocess.CalledProcessError) as excinfo:
        stack.run("keys", "revoke", "HKNOSUCHKEY")
    assert "No access key" in excinfo.value.stderr and "Traceback" not in excinfo.value.stderr


# --- signatures ----------------------------------------------------------------------------


def test_wrong_secret_is_refused_without_leaking_the_expected_signature(
    api_url: str, app_id: str, frozen_clock: Any
) -> None:
    frozen_clock(datetime.now(UTC))
    path = f"/v1/apps/{app_id}"
    right = signed_headers(api_url, "GET", path)
    wrong = signed_headers(api_url, "GET", path, secret=ROOT_SECRET + "x")
    expected = _SIGNATURE.search(right["Authorization"])
    assert expected is not None and expected[1] not in wrong["Authorization"]
    response = send(api_url, "GET", path, headers=wrong)
    message = assert_forbidden(response, "signature")
    assert expected[1] not in response.text and expected[1] not in str(response.headers)
    assert not re.search(r"[0-9a-f]{64}", message)
    # The right signature at the same instant is accepted: only the secret was wrong.
    assert send(api_url, "GET", path, headers=right).status_code == 200


def test_tampered_request_is_refused(api_url: str, app_id: str) -> None:
    path = f"/v1/apps/{app_id}/endpoints/e1"
    signed_body = json.dumps({"ChannelType": "EMAIL", "Address": "a@x.test"}).encode()
    sent_body = json.dumps({"ChannelType": "EMAIL", "Address": "evil@x.test"}).encode()
    headers = signed_headers(api_url, "PUT", path, signed_body)
    assert_forbidden(send(api_url, "PUT", path, sent_body, headers), "does not match")
    # The same signature over another path, method or query string.
    assert_forbidden(send(api_url, "PUT", path + "x", signed_body, headers), "does not match")
    read = signed_headers(api_url, "GET", path)
    assert_forbidden(send(api_url, "DELETE", path, b"", read), "does not match")
    assert_forbidden(send(api_url, "PUT", path + "?a=1", signed_body, headers))
    # And the untampered request goes through.
    assert send(api_url, "PUT", path, signed_body, headers).status_code == 202


def test_signed_payload_hash_header_must_match_the_body(api_url: str, app_id: str) -> None:
    """SDKs that send X-Amz-Content-SHA256 sign the header, not the body: the server must
    check the body against it, or a captured request can carry any body."""
    path = f"/v1/apps/{app_id}/endpoints/e2"
    signed_body = json.dumps({"ChannelType": "EMAIL", "Address": "a@x.test"}).encode()
    sent_body = json.dumps({"ChannelType": "EMAIL", "Address": "evil@x.test"}).encode()
    headers = signed_headers(
        api_url, "PUT", path, signed_body,
        headers={"X-Amz-Content-SHA256": hashlib.sha256(signed_body).hexdigest()})
    assert_forbidden(send(api_url, "PUT", path, sent_body, headers), "X-Amz-Content-SHA256")
    assert send(api_url, "PUT", path, signed_body, headers).status_code == 202
    unsigned = signed_headers(api_url, "PUT", path, sent_body,
                              headers={"X-Amz-Content-SHA256": "UNSIGNED-PAYLOAD"})
    assert_forbidden(send(api_url, "PUT", path, sent_body, unsigned))


@pytest.mark.parametrize("minutes", [-16, 16])
def test_replayed_or_future_dated_request_is_refused(
    api_url: str, app_id: str, frozen_clock: Any, minutes: int
) -> None:
    path = f"/v1/apps/{app_id}"
    frozen_clock(datetime.now(UTC) + timedelta(minutes=minutes))
    stale = signed_headers(api_url, "GET", path)
    assert_forbidden(send(api_url, "GET", path, headers=stale), "expired")
    # Inside the 15-minute window the same kind of request is accepted.
    frozen_clock(datetime.now(UTC) + timedelta(minutes=minutes * 13 // 16))
    assert send(api_url, "GET", path, headers=signed_headers(api_url, "GET", path)
                ).status_code == 200


@pytest.mark.parametrize(
    ("scope", "needle"),
    [({"region": "eu-west-1"}, "region"), ({"service": "pinpoint"}, "service"),
     ({"service": "s3"}, "service")],
)
def test_wrong_credential_scope_is_refused(
    api_url: str, app_id: str, scope: dict[str, str], needle: str
) -> None:
    path = f"/v1/apps/{app_id}"
    assert_forbidden(send(api_url, "GET", path,
                          headers=signed_headers(api_url, "GET", path, **scope)), needle)


def test_unsigned_malformed_and_unknown_credentials_are_refused(
    api_url: str, app_id: str
) -> None:
    path = f"/v1/apps/{app_id}"
    assert_forbidden(send(api_url, "GET", path), "Missing Authentication Token")
    body = json.dumps({"Name": "x"}).encode()
    assert_forbidden(send(api_url, "POST", "/v1/apps", body), "Missing Authentication Token")
    assert_forbidden(send(api_url, "GET", path, headers={"Authorization": "Bearer abc"}),
                     "not a valid")
    assert_forbidden(send(api_url, "GET", path, headers=signed_headers(
        api_url, "GET", path, key="HKNOSUCHKEY0000000000")), "security token")
    now = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for key_id in ("\xe9t\xe9".encode("latin-1"), b"HK" + b"A" * 500, b"%00"):
        authorization = (b"AWS4-HMAC-SHA256 Credential=" + key_id
                         + f"/{now[:8]}/us-east-1/mobiletargeting/aws4_request, "
                           f"SignedHeaders=host;x-amz-date, Signature={'0' * 64}".encode())
        assert_forbidden(send(api_url, "GET", path,
                              headers={"Authorization": authorization,  # type: ignore[dict-item]
                                       "X-Amz-Date": now}))


def test_boto3_with_a_wrong_key_gets_forbidden(api_url: str) -> None:
    for key_id, secret in ((ROOT_KEY_ID, "wrong"), ("HKNOSUCHKEY0000000000", ROOT_SECRET)):
        with pytest.raises(ClientError) as excinfo:
            pinpoint(api_url, key_id, secret).get_apps()
        assert_client_forbidden(excinfo)


def test_health_and_readiness_are_unsigned(api_url: str) -> None:
    assert httpx.get(api_url + "/healthz").status_code == 200
    ready = httpx.get(api_url + "/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


# --- the AWS CLI ---------------------------------------------------------------------------


def _aws(api_url: str, key_id: str, secret: str, tmp_path: Any, *args: str
         ) -> subprocess.CompletedProcess[str]:
    env = {
        "PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path),
        "AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1",
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }
    return subprocess.run(
        [str(VENV_BIN / "aws"), "pinpoint", *args, "--endpoint-url", api_url, "--output",
         "json"], env=env, capture_output=True, text=True, timeout=120,
    )


def test_aws_cli_works_with_a_valid_key_and_is_refused_with_a_wrong_one(
    stack: Stack, api_url: str, app_id: str, tmp_path: Any
) -> None:
    key_id, secret = create_key(stack, app_id)
    ok = _aws(api_url, key_id, secret, tmp_path, "get-apps")
    assert ok.returncode == 0, ok.stderr
    assert [a["Id"] for a in json.loads(ok.stdout)["ApplicationsResponse"]["Item"]] == [app_id]
    got = _aws(api_url, key_id, secret, tmp_path, "get-app", "--application-id", app_id)
    assert got.returncode == 0 and json.loads(got.stdout)["ApplicationResponse"]["Id"] == app_id

    wrong = _aws(api_url, key_id, secret + "x", tmp_path, "get-apps")
    assert wrong.returncode != 0 and "ForbiddenException" in wrong.stderr, wrong.stderr
    other = _aws(api_url, key_id, secret, tmp_path, "get-app", "--application-id",
                 uuid.uuid4().hex)
    assert other.returncode != 0 and "ForbiddenException" in other.stderr, other.stderr


# --- logs at INFO: every event an operator needs, no secret, token or body ------------------


@pytest.fixture(scope="module")
def chatty(smtp: FakeSmtp, fakes: Fakes) -> Iterator[Stack]:
    """A stack of its own at INFO, production's default level: the ``request`` and
    ``delivery attempt`` events reach its logs (the shared stack logs at WARNING)."""
    stack = Stack("chatty", env={**provider_env(smtp, fakes), "HERALD_LOG_LEVEL": "INFO"})
    try:
        stack.start_worker()
        stack.start_api()
        yield stack
    finally:
        stack.stop()


def _events(stack: Stack) -> list[dict[str, Any]]:
    events = []
    for log in ARTIFACTS.glob(f"{stack.name}-*.log"):
        for line in log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
    return events


def test_logs_at_info_carry_the_events_and_no_secret(chatty: Stack, fakes: Fakes,
                                                     smtp: FakeSmtp) -> None:
    url = chatty.apis[0][1]
    client = pinpoint(url)
    app_id = client.create_app(CreateApplicationRequest={"Name": "chatty"})[
        "ApplicationResponse"]["Id"]
    token_key = make_token_key()
    for fake in (fakes.apns, fakes.apns_sandbox):
        fake.register_token_key("KEYCHATTY1", "TEAMCHATTY", token_key)
    client.update_apns_channel(ApplicationId=app_id, APNSChannelRequest={
        "TokenKey": token_key, "TokenKeyId": "KEYCHATTY1", "TeamId": "TEAMCHATTY",
        "BundleId": BUNDLE_ID, "DefaultAuthenticationMethod": "TOKEN", "Enabled": True})
    account = fakes.fcm.add_service_account(project_id="herald-chatty")
    client.update_gcm_channel(ApplicationId=app_id, GCMChannelRequest={
        "ServiceJson": json.dumps(account), "DefaultAuthenticationMethod": "TOKEN",
        "Enabled": True})
    client.update_adm_channel(ApplicationId=app_id, ADMChannelRequest={
        "ClientId": fakes.adm.client_id, "ClientSecret": fakes.adm.client_secret})
    client.update_baidu_channel(ApplicationId=app_id, BaiduChannelRequest={
        "ApiKey": fakes.baidu.api_key, "SecretKey": fakes.baidu.secret_key})
    client.update_email_channel(ApplicationId=app_id, EmailChannelRequest={
        "FromAddress": "news@herald.test", "Identity": "herald.test", "Enabled": True})
    client.update_sms_channel(ApplicationId=app_id, SMSChannelRequest={"Enabled": True})
    tokens = {
        "APNS": secrets.token_hex(32),
        "GCM": "fcm-" + secrets.token_hex(16),
        "ADM": "amzn1.adm-registration.v3." + secrets.token_hex(16),
        "BAIDU": str(secrets.randbelow(10**18) + 10**17),
    }
    endpoints = {
        **{f"e-{channel.lower()}": {"ChannelType": channel, "Address": token}
           for channel, token in tokens.items()},
        "e-email": {"ChannelType": "EMAIL", "Address": "chatty.reader@herald.test"},
        "e-sms": {"ChannelType": "SMS", "Address": "+15555550142"},
    }
    client.update_endpoints_batch(ApplicationId=app_id, EndpointBatchRequest={"Item": [
        {"Id": endpoint_id, "User": {"UserId": "reader"}, **body}
        for endpoint_id, body in endpoints.items()]})
    body, title = f"body-{uuid.uuid4().hex}", f"title-{uuid.uuid4().hex}"
    response = client.send_users_messages(ApplicationId=app_id, SendUsersMessageRequest={
        "MessageConfiguration": {
            "DefaultPushNotificationMessage": {"Title": title, "Body": body},
            "DefaultMessage": {"Body": body},
            "EmailMessage": {"SimpleEmail": {"Subject": {"Data": title},
                                             "TextPart": {"Data": body}}},
        },
        "Users": {"reader": {}}})["SendUsersMessageResponse"]
    # Every endpoint was attempted (on a loaded machine an attempt may end in a timeout: the
    # event is logged all the same, and bodies and tokens were in play either way).
    assert set(response["Result"]["reader"]) == set(endpoints)

    # The events are there (so this test can fail): the worker logs one per attempt, the API
    # one per request, each carrying ids, never contents.
    def attempts() -> dict[str, dict[str, Any]]:
        return {e["endpoint_id"]: e for e in _events(chatty)
                if e.get("event") == "delivery attempt"
                and e.get("request_id") == response["RequestId"]}

    deadline = time.monotonic() + 15
    while set(attempts()) != set(endpoints) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert set(attempts()) == set(endpoints)
    assert {e["channel"] for e in attempts().values()} == {*tokens, "EMAIL", "SMS"}
    paths = {e["path"].removeprefix(f"/v1/apps/{app_id}") for e in _events(chatty)
             if e.get("event") == "request" and e.get("status") in (200, 202)}
    assert {"/channels/apns", "/channels/gcm", "/channels/adm", "/channels/baidu",
            "/endpoints", "/users-messages"} <= paths

    never = {
        "root secret": ROOT_SECRET,
        "HERALD_SECRET_KEY": SECRET_KEY,
        "APNs token key": _key_material(token_key),
        "FCM service account key": _key_material(account["private_key"]),
        "ADM client secret": fakes.adm.client_secret,
        "Baidu secret key": fakes.baidu.secret_key,
        "Twilio auth token": fakes.twilio.auth_token,
        "SMTP password": "s3cret",
        "message body": body,
        "message title": title,
        **{f"{channel} token": token for channel, token in tokens.items()},
    }
    logs = list(ARTIFACTS.glob(f"{chatty.name}-*.log"))
    assert {log.name.split("-")[-2] for log in logs} >= {"api", "worker"}
    for log in logs:
        content = log.read_text(errors="replace")
        for what, value in never.items():
            assert value not in content, f"{what} in {log.name}"


def _key_material(pem: str) -> str:
    """A line of a PEM key's base64: what a leak of the key would contain."""
    return pem.strip().splitlines()[2]
