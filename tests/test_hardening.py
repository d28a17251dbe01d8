"""Issue 14, part B: what one tenant (a key scoped to its app) or an unsigned client must not
be able to do — against the live stack with boto3, and against the plain functions."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml
from botocore.exceptions import ClientError
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.fakes.smtp import FakeSmtp
from tests.stack import ARTIFACTS, ROOT, ROOT_KEY_ID, SECRET_KEY, VENV_BIN, Stack, pinpoint
from tests.test_security import signed_headers
from worker import wire
from worker.core import crypto
from worker.core.config import ConfigError, Settings, load_settings
from worker.core.errors import BadRequest
from worker.core.vocabulary import ChannelConfig
from worker.management import senders

DEPLOY = ROOT / "deploy"


def _herald(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    return subprocess.run([str(VENV_BIN / "herald"), *args], env={**clean, **env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def _example_values(path: Path) -> dict[str, str]:
    if path.suffix == ".yaml":
        return dict(yaml.safe_load(path.read_text())["stringData"])
    values = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            values[name] = value
    return values


# --- item 4: shipped example keys, weak secrets, the at-rest key derivation -------------------


@pytest.mark.parametrize("example", ["k8s/secret.example.yaml", "systemd/herald.env.example"])
def test_the_shipped_example_keys_do_not_start_herald(example: str) -> None:
    values = _example_values(DEPLOY / example)
    env = {name: values[name] for name in (
        "HERALD_SECRET_KEY", "HERALD_ROOT_ACCESS_KEY_ID", "HERALD_ROOT_SECRET_ACCESS_KEY")}
    result = _herald({**env, "HERALD_DATABASE_URL": "sqlite://"}, "keys", "list")
    assert result.returncode != 0
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    for name in env:
        assert name in message
    assert "token_urlsafe(32)" in message


@pytest.mark.parametrize(("variable", "value"), [
    ("HERALD_SECRET_KEY", "hunter2"),
    ("HERALD_SECRET_KEY", "change-me"),
    ("HERALD_SECRET_KEY", "a" * 64),
    ("HERALD_ROOT_SECRET_ACCESS_KEY", "Q7"),
    ("HERALD_ROOT_SECRET_ACCESS_KEY", "change-me"),
    ("HERALD_ROOT_ACCESS_KEY_ID", "HKCHANGEME000000001"),
])
def test_weak_or_example_secrets_are_refused_at_start_up(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv("HERALD_SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("HERALD_ROOT_ACCESS_KEY_ID", "HKTESTROOTKEY0000001")
    monkeypatch.setenv("HERALD_ROOT_SECRET_ACCESS_KEY", SECRET_KEY[::-1])
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as excinfo:
        load_settings()
    assert variable in str(excinfo.value)
    assert f"={value}" not in str(excinfo.value) and f"'{value}'" not in str(excinfo.value)


def _legacy_token(secret_key: str, plaintext: bytes) -> bytes:
    """Encrypted as Herald did before issue 14: Fernet keyed by one SHA-256 of the secret."""
    key = base64.urlsafe_b64encode(hashlib.sha256(secret_key.encode()).digest())
    return Fernet(key).encrypt(plaintext)


def test_the_at_rest_key_comes_from_a_kdf_and_old_ciphertexts_still_decrypt() -> None:
    settings = Settings(secret_key=SECRET_KEY, database_url="sqlite://")
    legacy = base64.urlsafe_b64encode(hashlib.sha256(SECRET_KEY.encode()).digest())
    assert settings.fernet_key() != legacy
    old = _legacy_token(SECRET_KEY, b'{"ServiceJson": "old"}')
    assert crypto.decrypt_json(old, settings) == {"ServiceJson": "old"}
    new = crypto.encrypt(b"new", settings)
    with pytest.raises(InvalidToken):
        Fernet(legacy).decrypt(new)  # written with the new derivation only
    rotated = crypto.reencrypt(old, settings)
    assert Fernet(settings.fernet_key()).decrypt(rotated) == b'{"ServiceJson": "old"}'


def test_a_previous_weak_secret_key_still_reads_what_it_encrypted() -> None:
    old = _legacy_token("secret", b"channel credentials")
    moved = Settings(secret_key=SECRET_KEY, previous_secret_key="secret",
                     database_url="sqlite://")
    assert crypto.decrypt(old, moved) == b"channel credentials"
    with pytest.raises(crypto.SecretDecryptionError):
        crypto.decrypt(old, Settings(secret_key=SECRET_KEY, database_url="sqlite://"))


def test_an_access_key_stored_before_the_upgrade_still_signs(
    stack: Stack, api_url: str, app_id: str, db: Engine
) -> None:
    key_id = "HKOLD" + uuid.uuid4().hex[:15].upper()
    secret = base64.b64encode(os.urandom(30)).decode()
    with db.begin() as conn:
        conn.execute(
            text("INSERT INTO access_keys (id, secret, app_ids, description, created_at) "
                 "VALUES (:id, :secret, NULL, 'pre-upgrade', now())"),
            {"id": key_id, "secret": _legacy_token(SECRET_KEY, secret.encode())},
        )
    client = pinpoint(api_url, key_id, secret)
    assert client.get_app(ApplicationId=app_id)["ApplicationResponse"]["Id"] == app_id
    with pytest.raises(ClientError):
        pinpoint(api_url, key_id, secret[::-1]).get_app(ApplicationId=app_id)

    # herald reencrypt-secrets moves it to the new derivation, and it still signs.
    stack.run("reencrypt-secrets")
    with db.connect() as conn:
        stored = conn.execute(text("SELECT secret FROM access_keys WHERE id = :id"),
                              {"id": key_id}).scalar_one()
    current = Settings(secret_key=SECRET_KEY, database_url="sqlite://").fernet_key()
    assert Fernet(current).decrypt(bytes(stored)) == secret.encode()
    time.sleep(5.5)  # the API's key cache (KeyStore's 5 s) must read the row again
    assert client.get_app(ApplicationId=app_id)["ApplicationResponse"]["Id"] == app_id


def test_embedded_default_still_generates_a_key_herald_accepts(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    key = settings.fernet_key()
    assert (tmp_path / "data" / "secret.key").stat().st_mode & 0o777 == 0o600
    assert Settings(data_dir=tmp_path / "data").fernet_key() == key



# --- item 6: unsigned and slow clients hold neither memory nor connections ---------------------


def _api_process(stack: Stack, index: int = 0) -> psutil.Process:
    return psutil.Process(stack.apis[index][0].pid)


def _open_connections(process: psutil.Process, port: int) -> int:
    return sum(1 for c in process.net_connections("tcp")
               if c.laddr and c.laddr.port == port and c.status == psutil.CONN_ESTABLISHED)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _wait_for(condition: Callable[[], bool], timeout: float = 30) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return condition()


def _read_until_closed(sock: socket.socket) -> bytes:
    """What the server sends until it closes the connection (the socket's timeout bounds a
    server that never does)."""
    received = b""
    while chunk := sock.recv(65536):
        received += chunk
    return received


def _half_sent_upload(port: int, head: str, body_sent: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    sock.sendall(head.encode() + b"{" + b" " * (body_sent - 1))
    return sock


def test_unsigned_uploads_are_refused_before_their_body_and_their_connections_closed(
    stack: Stack, api_url: str, app_id: str
) -> None:
    port = _port(api_url)
    api = _api_process(stack)
    baseline = _open_connections(api, port)
    heads = {
        "unsigned": "",
        "unknown key": (
            "Authorization: AWS4-HMAC-SHA256 Credential=HKNOSUCHKEY000000000/20261201/"
            f"us-east-1/mobiletargeting/aws4_request, SignedHeaders=host;x-amz-date, "
            f"Signature={'0' * 64}\r\nX-Amz-Date: {time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
            "\r\n"
        ),
    }
    sockets = []
    for kind, auth in heads.items():
        for _ in range(30):
            head = (f"PUT /v1/apps/{app_id}/endpoints/e1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                    f"Content-Type: application/json\r\nContent-Length: 7000000\r\n{auth}\r\n")
            sockets.append((kind, _half_sent_upload(port, head, 64 * 1024)))
    try:
        for kind, sock in sockets:
            answer = _read_until_closed(sock)  # the server answers and closes, body unread
            status, _, rest = answer.partition(b"\r\n")
            assert status == b"HTTP/1.1 403 Forbidden", (kind, answer[:200])
            assert b"x-amzn-errortype: forbiddenexception" in rest.lower(), (kind, rest[:300])
    finally:
        for _, sock in sockets:
            sock.close()
    assert _wait_for(lambda: _open_connections(api, port) <= baseline + 2)


@pytest.fixture(scope="module")
def impatient(smtp: FakeSmtp) -> Iterator[Stack]:
    """A stack whose API gives a client 1 s for its request head and 1 s for its body, and
    logs every request."""
    stack = Stack("impatient", env={"HERALD_SMTP_URL": smtp.url, "HERALD_HEAD_TIMEOUT_S": "1",
                                    "HERALD_BODY_TIMEOUT_S": "1", "HERALD_LOG_LEVEL": "INFO"})
    try:
        stack.start_api()
        yield stack
    finally:
        stack.stop()


def test_slow_heads_and_slow_signed_bodies_do_not_keep_their_connections(
    impatient: Stack,
) -> None:
    url = impatient.apis[0][1]
    port = _port(url)
    api = _api_process(impatient)
    baseline = _open_connections(api, port)
    app_id = pinpoint(url).create_app(CreateApplicationRequest={"Name": "slow"})[
        "ApplicationResponse"]["Id"]
    body = b'{"ChannelType": "EMAIL", "Address": "a@example.com"}'
    signed = signed_headers(url, "PUT", f"/v1/apps/{app_id}/endpoints/e1", body)
    head = (f"PUT /v1/apps/{app_id}/endpoints/e1 HTTP/1.1\r\n"
            + "".join(f"{k}: {v}\r\n" for k, v in signed.items())
            + f"Content-Length: {len(body)}\r\n\r\n")
    slow_heads = [socket.create_connection(("127.0.0.1", port), timeout=20) for _ in range(25)]
    for sock in slow_heads:
        sock.sendall(b"PUT /v1/apps HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
    slow_bodies = [_half_sent_upload(port, head, 8) for _ in range(25)]
    try:
        assert _wait_for(lambda: _open_connections(api, port) >= baseline + 40)
        for sock in slow_heads:
            assert _read_until_closed(sock) == b""  # closed, nothing answered
        for sock in slow_bodies:
            answer = _read_until_closed(sock)
            assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
            assert b"did not arrive within 1 s" in answer
    finally:
        for sock in slow_heads + slow_bodies:
            sock.close()
    assert _wait_for(lambda: _open_connections(api, port) <= baseline + 2)


# --- item 12: a dropped upload is no server error; the request log names key and client ------


def _log_events(stack: Stack) -> list[dict[str, Any]]:
    events = []
    for line in (ARTIFACTS / f"{stack.name}-api-0.log").read_text().splitlines():
        with contextlib.suppress(ValueError):
            events.append(json.loads(line))
    return events


def test_a_client_dropping_its_upload_is_logged_quietly_not_as_a_500(impatient: Stack) -> None:
    url = impatient.apis[0][1]
    port = _port(url)
    app_id = pinpoint(url).create_app(CreateApplicationRequest={"Name": "drop"})[
        "ApplicationResponse"]["Id"]
    path = f"/v1/apps/{app_id}/endpoints/dropped"
    body = b'{"ChannelType": "EMAIL", "Address": "a@example.com"}' + b" " * 100_000
    signed = signed_headers(url, "PUT", path, body)
    head = (f"PUT {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in signed.items())
            + f"Content-Length: {len(body)}\r\n\r\n")
    sock = socket.create_connection(("127.0.0.1", port), timeout=20)
    sock.sendall(head.encode() + body[:50_000])
    time.sleep(0.2)  # let the API start reading the body; the test asserts no timing
    sock.close()

    def dropped() -> list[dict[str, Any]]:
        return [e for e in _log_events(impatient)
                if e.get("event") == "request" and e.get("path") == path]

    assert _wait_for(lambda: bool(dropped()))
    event = dropped()[0]
    assert event["status"] == 499
    assert event["access_key_id"] == ROOT_KEY_ID
    assert event["client"] == "127.0.0.1"
    assert not [e for e in _log_events(impatient) if e.get("level") == "error"]
    assert "Traceback" not in (ARTIFACTS / f"{impatient.name}-api-0.log").read_text()
    scrape = httpx.get(url + "/metrics", timeout=10).text
    assert 'status="500"' not in scrape


def test_the_request_log_names_the_access_key_and_the_client(impatient: Stack) -> None:
    url = impatient.apis[0][1]
    pinpoint(url).get_apps()

    def events() -> list[dict[str, Any]]:
        return [e for e in _log_events(impatient)
                if e.get("event") == "request" and e.get("operation") == "get_apps"]

    # The event is written once the answer has been sent: the client can read it first.
    assert _wait_for(lambda: bool(events()), timeout=10)
    assert events()[-1]["access_key_id"] == ROOT_KEY_ID
    assert events()[-1]["client"] == "127.0.0.1"


def test_herald_results_escapes_terminal_control_sequences(
    stack: Stack, client: Any, app_id: str
) -> None:
    hostile = "\x1b]0;pwned\x07\x1b[2J\u202eevil"
    response = client.send_users_messages(ApplicationId=app_id, SendUsersMessageRequest={
        "MessageConfiguration": {"DefaultMessage": {"Body": "hi"}}, "Users": {hostile: {}}})
    request_id = response["SendUsersMessageResponse"]["RequestId"]
    table = stack.run("results", request_id).stdout
    as_json = stack.run("results", request_id, "--json").stdout
    for output in (table, as_json):
        assert "\x1b" not in output and "\x07" not in output and "\u202e" not in output
    assert "\\x1b]0;pwned\\x07" in table
    assert json.loads(as_json)["Result"][hostile][""]["DeliveryStatus"] == "PERMANENT_FAILURE"


# --- item 9: quotas hold for the stored endpoint; bounded members ---------------------------


def _bad_request(excinfo: pytest.ExceptionInfo[ClientError]) -> str:
    error = excinfo.value.response["Error"]
    assert excinfo.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error["Code"] == "BadRequestException"
    return str(error["Message"])


def test_repeated_updates_cannot_grow_an_endpoint_past_250_attributes(
    client: Any, app_id: str
) -> None:
    for batch in range(4):  # 4 × 60 = 240 attributes, each request well within the quota
        client.update_endpoint(ApplicationId=app_id, EndpointId="grow", EndpointRequest={
            "ChannelType": "EMAIL", "Address": "grow@example.com",
            "Attributes": {f"a{batch}-{i}": ["v"] for i in range(60)}})
    with pytest.raises(ClientError) as excinfo:
        client.update_endpoint(ApplicationId=app_id, EndpointId="grow", EndpointRequest={
            "User": {"UserAttributes": {f"u{i}": ["v"] for i in range(11)}}})
    assert "at most 250" in _bad_request(excinfo)
    with pytest.raises(ClientError):
        client.update_endpoints_batch(ApplicationId=app_id, EndpointBatchRequest={"Item": [
            {"Id": "grow", "Metrics": {f"m{i}": 1.0 for i in range(11)}}]})
    stored = client.get_endpoint(ApplicationId=app_id, EndpointId="grow")["EndpointResponse"]
    assert len(stored["Attributes"]) == 240 and not stored.get("Metrics")
    # Replacing existing names is no growth.
    client.update_endpoint(ApplicationId=app_id, EndpointId="grow", EndpointRequest={
        "Attributes": {f"a0-{i}": ["w"] for i in range(60)},
        "Metrics": {f"m{i}": 1.0 for i in range(10)}})


@pytest.mark.parametrize(("member", "value"), [
    ("Demographic.Make", {"Demographic": {"Make": "x" * 3_000_000}}),
    ("Demographic.Timezone", {"Demographic": {"Timezone": "x" * 101}}),
    ("Location.City", {"Location": {"City": "x" * 101}}),
    ("EffectiveDate", {"EffectiveDate": "2026-12-01T00:00:00Z" + "x" * 100}),
    ("RequestId", {"RequestId": "r" * 129}),
])
def test_endpoint_members_are_bounded(
    client: Any, app_id: str, member: str, value: dict[str, Any]
) -> None:
    with pytest.raises(ClientError) as excinfo:
        client.update_endpoint(ApplicationId=app_id, EndpointId="big", EndpointRequest={
            "ChannelType": "EMAIL", "Address": "big@example.com", **value})
    assert member in _bad_request(excinfo)
    with pytest.raises(ClientError):
        client.get_endpoint(ApplicationId=app_id, EndpointId="big")


# --- item 10: e-mail header names ---------------------------------------------------------------


def _email_with_headers(headers: list[dict[str, str]], to: str) -> dict[str, Any]:
    return {"Addresses": {to: {"ChannelType": "EMAIL"}}, "MessageConfiguration": {
        "EmailMessage": {"SimpleEmail": {
            "Subject": {"Data": "s"}, "TextPart": {"Data": "t"}, "Headers": headers}}}}


@pytest.mark.parametrize("name", [
    "To: evil@attacker.example, X-A", "X A", "X-A\r\nBcc: evil@attacker.example", "Bcc", "to",
    "Reply-To", "Sender", "Return-Path", "Content-Type", "MIME-Version", "Message-ID", "Ünï",
])
def test_email_header_names_must_be_field_names_and_not_reserved(
    client: Any, email_app: str, name: str
) -> None:
    with pytest.raises(ClientError) as excinfo:
        client.send_messages(ApplicationId=email_app, MessageRequest=_email_with_headers(
            [{"Name": name, "Value": "v"}], "victim@example.com"))
    assert "Headers" in _bad_request(excinfo)


def test_a_custom_header_is_sent_once_and_adds_no_recipient(
    client: Any, email_app: str, smtp: FakeSmtp
) -> None:
    to = f"h-{uuid.uuid4().hex[:8]}@example.com"
    result = client.send_messages(ApplicationId=email_app, MessageRequest=_email_with_headers(
        [{"Name": "X-Campaign", "Value": "spring"}], to))["MessageResponse"]["Result"][to]
    assert result["DeliveryStatus"] == "SUCCESSFUL"
    received = smtp.to(to)[-1]
    assert received.recipients == [to]
    assert received.message.get_all("X-Campaign") == ["spring"]
    assert received.message.get_all("To") == [to]


# --- item 13: an app sends only as its own identities ------------------------------------------


def _sms_app(client: Any, app_id: str) -> str:
    client.update_sms_channel(ApplicationId=app_id, SMSChannelRequest={
        "SenderId": "OURS", "ShortCode": "+15550007777", "Enabled": True})
    client.update_voice_channel(ApplicationId=app_id, VoiceChannelRequest={"Enabled": True})
    return app_id


def test_an_email_channel_sends_only_from_its_identity(client: Any, app_id: str) -> None:
    with pytest.raises(ClientError) as excinfo:
        client.update_email_channel(ApplicationId=app_id, EmailChannelRequest={
            "FromAddress": "ceo@other-tenant.example", "Identity": "herald.test"})
    assert "Identity" in _bad_request(excinfo)
    for from_address, identity in (
        ("news@herald.test", "herald.test"),
        ("news@mail.herald.test", "herald.test"),
        ("only@herald.test", "only@herald.test"),
        ("news@herald.test", "arn:aws:ses:us-east-1:123456789012:identity/herald.test"),
    ):
        client.update_email_channel(ApplicationId=app_id, EmailChannelRequest={
            "FromAddress": from_address, "Identity": identity})


@pytest.mark.parametrize("email_message", [
    {"FromAddress": "ceo@other-tenant.example"},
    {"FromAddress": "Boss <boss@herald.test.other-tenant.example>"},
    {"FeedbackForwardingAddress": "bounces@other-tenant.example"},
    {"RawEmail": {"Data": b"From: ceo@other-tenant.example\r\nSubject: s\r\n\r\nbody"}},
    {"RawEmail": {"Data": b"Sender: ceo@other-tenant.example\r\nSubject: s\r\n\r\nbody"}},
])
def test_a_message_cannot_claim_another_tenants_email_identity(
    client: Any, email_app: str, smtp: FakeSmtp, email_message: dict[str, Any]
) -> None:
    to = f"victim-{uuid.uuid4().hex[:8]}@example.com"
    message = {"SimpleEmail": {"Subject": {"Data": "s"}, "TextPart": {"Data": "t"}},
               **email_message}
    with pytest.raises(ClientError) as excinfo:
        client.send_messages(ApplicationId=email_app, MessageRequest={
            "Addresses": {to: {"ChannelType": "EMAIL"}},
            "MessageConfiguration": {"EmailMessage": message}})
    assert "other-tenant.example" in _bad_request(excinfo)
    assert smtp.to(to) == []


def test_a_message_from_the_apps_own_identity_is_sent(
    client: Any, email_app: str, smtp: FakeSmtp
) -> None:
    to = f"ok-{uuid.uuid4().hex[:8]}@example.com"
    result = client.send_messages(ApplicationId=email_app, MessageRequest={
        "Addresses": {to: {"ChannelType": "EMAIL"}},
        "MessageConfiguration": {"EmailMessage": {
            "FromAddress": "Offers <offers@herald.test>",
            "FeedbackForwardingAddress": "bounces@herald.test",
            "SimpleEmail": {"Subject": {"Data": "s"}, "TextPart": {"Data": "t"}}}}},
    )["MessageResponse"]["Result"][to]
    assert result["DeliveryStatus"] == "SUCCESSFUL"
    assert smtp.to(to)[-1].envelope_from == "bounces@herald.test"


@pytest.mark.parametrize("message_configuration", [
    {"SMSMessage": {"Body": "b", "OriginationNumber": "+15550001234"}},
    {"SMSMessage": {"Body": "b", "SenderId": "BANK"}},
    {"VoiceMessage": {"Body": "b", "OriginationNumber": "+15550001234"}},
])
def test_a_message_cannot_claim_another_tenants_number_or_sender_id(
    client: Any, app_id: str, message_configuration: dict[str, Any]
) -> None:
    _sms_app(client, app_id)
    with pytest.raises(ClientError) as excinfo:
        client.send_messages(ApplicationId=app_id, MessageRequest={
            "Addresses": {"+15550100077": {"ChannelType": "SMS"}},
            "MessageConfiguration": message_configuration})
    assert "is not this application's" in _bad_request(excinfo)


@pytest.mark.parametrize("sender", [
    {"OriginationNumber": "+1 555 000 7777"}, {"SenderId": "ours"},
    {"OriginationNumber": "+15550009999"},  # the operator's HERALD_DEFAULT_ORIGINATION_NUMBER
])
def test_the_apps_own_numbers_and_the_operators_default_are_allowed(
    client: Any, app_id: str, sender: dict[str, str]
) -> None:
    _sms_app(client, app_id)
    result = client.send_messages(ApplicationId=app_id, MessageRequest={
        "Addresses": {"+15550100078": {"ChannelType": "SMS"}},
        "MessageConfiguration": {"SMSMessage": {"Body": "b", **sender}}},
    )["MessageResponse"]["Result"]["+15550100078"]
    assert result["DeliveryStatus"] == "SUCCESSFUL"


def test_the_operator_can_allow_any_sender() -> None:
    config = wire.DirectMessageConfiguration.model_validate(
        {"SMSMessage": {"OriginationNumber": "+15550001234"},
         "EmailMessage": {"FromAddress": "a@elsewhere.example"}})
    email = ChannelConfig("app", "EMAIL", True, settings={"Identity": "herald.test"})
    open_settings = Settings(allow_any_sender=True, database_url="sqlite://",
                             secret_key=SECRET_KEY)
    senders.check_message_senders(config, {"EMAIL": email}, open_settings)
    with pytest.raises(BadRequest):
        senders.check_message_senders(config, {"EMAIL": email}, Settings(
            database_url="sqlite://", secret_key=SECRET_KEY))


def test_the_shipped_proxy_logs_no_query_strings_and_limits_slow_clients() -> None:
    config = (DEPLOY / "haproxy.cfg").read_text()
    log_format = next(line for line in config.splitlines() if "log-format" in line)
    # %r is the whole request line and %HU the URI, both with the query string (%rc is a count).
    assert not re.search(r"%(\{[^}]*\})?(r|HU)(?![a-z])", log_format), log_format
    assert "%HP" in log_format
    for setting in ("timeout http-request", "timeout http-keep-alive", "maxconn"):
        assert setting in config, setting
