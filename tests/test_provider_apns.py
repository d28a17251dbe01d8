"""The APNs adapter against a fake APNs that speaks HTTP/2 over TLS and checks provider JWTs.

Each test drives ``ApnsProvider`` on its own event loop (``asyncio.run``), as a worker does.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import secrets
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.apns import (
    HANG,
    SHUTDOWN,
    FakeApns,
    RecordedRequest,
    Reply,
    make_client_cert,
    make_token_key,
)
from tests.providers import (
    channel_config,
    drive,
    provider_settings,
    push_delivery,
    push_status,
    send_all,
    send_one,
)
from worker.core.config import Settings
from worker.core.vocabulary import (
    ChannelConfig,
    DeliveryStatus,
    Outcome,
    OutgoingMessage,
    PushNotification,
)
from worker.providers.apns import (
    PAYLOAD_LIMIT,
    ApnsProvider,
    build_apns_payload,
    prepare_request,
)

BUNDLE = "com.example.herald"
KEY_ID = "KEY1234567"
TEAM_ID = "TEAM123456"
KEY_PEM = make_token_key()


# --- helpers -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_fake() -> Iterator[FakeApns]:
    with FakeApns(BUNDLE) as fake:
        fake.register_token_key(KEY_ID, TEAM_ID, KEY_PEM)
        yield fake


@pytest.fixture
def fake(shared_fake: FakeApns) -> FakeApns:
    shared_fake.clear()
    return shared_fake


def settings_for(
    url: str, sandbox_url: str | None = None, *, fake: FakeApns, timeout: float = 3.0
) -> Settings:
    return provider_settings(
        apns_url=url,
        apns_sandbox_url=sandbox_url or url,
        ca_bundle=fake.ca_path,
        provider_timeout_s=timeout,
    )


def apns(fake: FakeApns) -> ApnsProvider:
    """A provider that sends every channel to ``fake``."""
    return ApnsProvider(settings_for(fake.url, fake=fake))


def token_channel(
    channel_type: str = "APNS", *, key_pem: str = KEY_PEM, **settings: Any
) -> ChannelConfig:
    return channel_config(
        channel_type,
        settings={
            "BundleId": BUNDLE,
            "TeamId": TEAM_ID,
            "TokenKeyId": KEY_ID,
            "DefaultAuthenticationMethod": "TOKEN",
            **settings,
        },
        credentials={"TokenKey": key_pem},
    )


def device_token() -> str:
    return secrets.token_hex(32)


def delivery(
    content: PushNotification | None = None,
    *,
    channel_type: str = "APNS",
    token: str | None = None,
) -> OutgoingMessage:
    return push_delivery(channel_type, token or device_token(), content)


# --- pure builders -------------------------------------------------------------------------


def test_payload_carries_every_pinpoint_member() -> None:
    notification = PushNotification(
        title="Sale",
        body="50% off",
        url="myapp://deals/1",
        data={"dealId": "1"},
        sound="chime.caf",
        context={"campaign": "spring"},
        options={
            "Badge": 3,
            "Category": "DEAL",
            "ThreadId": "deals",
            "MediaUrl": "https://x/y.png",
        },
    )
    assert build_apns_payload(notification) == {
        "aps": {
            "alert": {"title": "Sale", "body": "50% off"},
            "sound": "chime.caf",
            "badge": 3,
            "category": "DEAL",
            "thread-id": "deals",
            "mutable-content": 1,
        },
        "data": {
            "pinpoint": {
                "campaign": "spring",
                "deeplink": "myapp://deals/1",
                "mediaUrl": "https://x/y.png",
                "jsonBody": '{"dealId": "1"}',
            }
        },
    }


def test_payload_minimal_has_no_empty_members() -> None:
    assert build_apns_payload(PushNotification(body="Hi")) == {"aps": {"alert": {"body": "Hi"}}}


def test_silent_payload_is_content_available_only() -> None:
    notification = PushNotification(
        title="t",
        body="b",
        sound="default",
        silent_push=True,
        data={"k": "v"},
        options={"Badge": 1},
    )
    assert build_apns_payload(notification) == {
        "aps": {"content-available": 1},
        "data": {"pinpoint": {"jsonBody": '{"k": "v"}'}},
    }


def test_payload_rejects_non_integer_badge() -> None:
    with pytest.raises(ValueError, match="Badge"):
        build_apns_payload(PushNotification(body="x", options={"Badge": "many"}))


@pytest.mark.parametrize(
    ("options", "silent", "expected"),
    [
        ({}, False, {"apns-push-type": "alert", "apns-priority": "10"}),
        ({}, True, {"apns-push-type": "background", "apns-priority": "5"}),
        ({"Priority": "normal"}, False, {"apns-priority": "5"}),
        ({"Priority": "high"}, True, {"apns-priority": "10"}),
        ({"Priority": "5"}, False, {"apns-priority": "5"}),
        ({"TimeToLive": 0}, False, {"apns-expiration": "0"}),
        ({"TimeToLive": 60}, False, {"apns-expiration": "1000060"}),
        (
            {"APNSPushType": "liveactivity"},
            False,
            {
                "apns-push-type": "liveactivity",
                "apns-topic": f"{BUNDLE}.push-type.liveactivity",
            },
        ),
        ({"CollapseId": "c" * 64}, False, {"apns-collapse-id": "c" * 64}),
    ],
)
def test_request_headers(options: dict[str, Any], silent: bool, expected: dict[str, str]) -> None:
    item = delivery(PushNotification(body="x", silent_push=silent, options=options))
    headers = dict(prepare_request(item, BUNDLE, now=1_000_000).headers)
    assert headers["apns-id"] == item.delivery_id
    for name, value in expected.items():
        assert headers[name] == value
    if "TimeToLive" not in options:
        assert "apns-expiration" not in headers


# --- token auth, headers, payload ---------------------------------------------------------


def test_token_auth_sends_what_apple_expects(fake: FakeApns) -> None:
    token = device_token()
    notification = PushNotification(
        title="Hello",
        body="World",
        url="myapp://inbox",
        data={"a": "1"},
        context={"journey": "j1"},
        options={"Priority": "high", "TimeToLive": 3600, "CollapseId": "inbox"},
    )
    item = delivery(notification, token=token)
    before = int(time.time())
    outcome = send_one(apns(fake), item, token_channel())

    assert outcome.status is DeliveryStatus.SUCCESSFUL
    assert outcome.status_code == 200
    assert outcome.message_id == item.delivery_id
    [request] = fake.requests
    assert request.status == 200
    assert request.path == f"/3/device/{token}"
    assert request.headers[":authority"] == f"127.0.0.1:{fake.port}"
    assert request.jwt_header is not None and request.jwt_header["kid"] == KEY_ID
    assert request.jwt_claims is not None and request.jwt_claims["iss"] == TEAM_ID
    assert abs(request.jwt_claims["iat"] - time.time()) < 60
    assert request.headers["apns-topic"] == BUNDLE
    assert request.headers["apns-push-type"] == "alert"
    assert request.headers["apns-priority"] == "10"
    assert before + 3600 <= int(request.headers["apns-expiration"]) <= int(time.time()) + 3600
    assert request.headers["apns-collapse-id"] == "inbox"
    assert request.headers["apns-id"] == item.delivery_id
    assert request.payload == {
        "aps": {"alert": {"title": "Hello", "body": "World"}},
        "data": {
            "pinpoint": {"journey": "j1", "deeplink": "myapp://inbox", "jsonBody": '{"a": "1"}'}
        },
    }


def test_sandbox_channels_go_to_the_sandbox_url(fake: FakeApns) -> None:
    with FakeApns(BUNDLE) as sandbox:
        sandbox.register_token_key(KEY_ID, TEAM_ID, KEY_PEM)
        settings = settings_for(fake.url, sandbox.url, fake=fake)
        for channel_type in ("APNS_SANDBOX", "APNS_VOIP_SANDBOX"):
            item = delivery(channel_type=channel_type)
            outcome = send_one(ApnsProvider(settings), item, token_channel(channel_type))
            assert outcome.status is DeliveryStatus.SUCCESSFUL
        assert len(sandbox.requests) == 2
        assert fake.requests == []

        for channel_type in ("APNS", "APNS_VOIP"):
            item = delivery(channel_type=channel_type)
            outcome = send_one(ApnsProvider(settings), item, token_channel(channel_type))
            assert outcome.status is DeliveryStatus.SUCCESSFUL
        assert len(fake.requests) == 2
        assert len(sandbox.requests) == 2


def test_voip_topic_push_type_and_larger_limit(fake: FakeApns) -> None:
    body = "v" * (PAYLOAD_LIMIT + 200)  # over 4 KB, within VoIP's 5 KB
    item = delivery(PushNotification(body=body), channel_type="APNS_VOIP")
    outcome = send_one(apns(fake), item, token_channel("APNS_VOIP"))
    assert outcome.status is DeliveryStatus.SUCCESSFUL, outcome
    [request] = fake.requests
    assert request.headers["apns-topic"] == f"{BUNDLE}.voip"
    assert request.headers["apns-push-type"] == "voip"
    assert request.payload["aps"]["alert"]["body"] == body

    # The same payload on a regular channel is over Apple's 4 KB.
    outcome = send_one(apns(fake), delivery(PushNotification(body=body)), token_channel())
    assert outcome.status is DeliveryStatus.PERMANENT_FAILURE
    assert len(fake.requests) == 1


def test_silent_push_is_a_background_notification(fake: FakeApns) -> None:
    notification = PushNotification(title="t", body="b", silent_push=True, data={"sync": "1"})
    outcome = send_one(apns(fake), delivery(notification), token_channel())
    assert outcome.status is DeliveryStatus.SUCCESSFUL
    [request] = fake.requests
    assert request.headers["apns-push-type"] == "background"
    assert request.headers["apns-priority"] == "5"
    assert request.payload == {
        "aps": {"content-available": 1},
        "data": {"pinpoint": {"jsonBody": '{"sync": "1"}'}},
    }


def test_time_to_live_zero_is_expiration_zero(fake: FakeApns) -> None:
    notification = PushNotification(body="now or never", options={"TimeToLive": 0})
    outcome = send_one(apns(fake), delivery(notification), token_channel())
    assert outcome.status is DeliveryStatus.SUCCESSFUL
    assert fake.requests[0].headers["apns-expiration"] == "0"


def test_raw_content_is_sent_byte_for_byte(fake: FakeApns) -> None:
    raw = '{ "aps" : {"alert": "Ünïcode"},\n  "custom": [1, 2.50] }'
    notification = PushNotification(title="ignored", raw_content=raw)
    outcome = send_one(apns(fake), delivery(notification), token_channel())
    assert outcome.status is DeliveryStatus.SUCCESSFUL
    assert fake.requests[0].body == raw.encode()


@pytest.mark.parametrize("raw", ["[1, 2]", "not json", '"text"'])
def test_raw_content_not_a_json_object_is_refused(fake: FakeApns, raw: str) -> None:
    notification = PushNotification(raw_content=raw)
    outcome = send_one(apns(fake), delivery(notification), token_channel())
    assert outcome.status is DeliveryStatus.PERMANENT_FAILURE
    assert outcome.status_code == 400
    assert "RawContent" in push_status(outcome)["errorMessage"]
    assert fake.requests == []


def test_payload_too_large_is_refused_before_sending(fake: FakeApns) -> None:
    notification = PushNotification(body="x" * PAYLOAD_LIMIT)
    outcome = send_one(apns(fake), delivery(notification), token_channel())
    assert outcome.status is DeliveryStatus.PERMANENT_FAILURE
    assert outcome.status_code == 413
    assert push_status(outcome)["pushProviderError"] == "PayloadTooLarge"
    assert fake.requests == []


def test_collapse_id_over_64_bytes_is_refused(fake: FakeApns) -> None:
    notification = PushNotification(body="x", options={"CollapseId": "é" * 33})  # 66 bytes
    outcome = send_one(apns(fake), delivery(notification), token_channel())
    assert outcome.status is DeliveryStatus.PERMANENT_FAILURE
    assert push_status(outcome)["pushProviderError"] == "BadCollapseId"
    assert fake.requests == []


def test_malformed_device_token_is_dead_without_asking(fake: FakeApns) -> None:
    outcome = send_one(apns(fake), delivery(token="../../3/device/x"), token_channel())
    assert outcome.status is DeliveryStatus.PERMANENT_FAILURE
    assert outcome.deactivate_endpoint
    assert fake.requests == []


# --- outcome mapping ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "status", "deactivate"),
    [
        (Reply(400, "BadDeviceToken"), DeliveryStatus.PERMANENT_FAILURE, True),
        (Reply(410, "Unregistered"), DeliveryStatus.PERMANENT_FAILURE, True),
        (Reply(410, "ExpiredToken"), DeliveryStatus.PERMANENT_FAILURE, True),
        (Reply(400, "BadTopic"), DeliveryStatus.PERMANENT_FAILURE, False),
        (Reply(413, "PayloadTooLarge"), DeliveryStatus.PERMANENT_FAILURE, False),
        (Reply(500, "InternalServerError"), DeliveryStatus.TEMPORARY_FAILURE, False),
        (Reply(503, "ServiceUnavailable"), DeliveryStatus.TEMPORARY_FAILURE, False),
        (Reply(503, "Shutdown"), DeliveryStatus.TEMPORARY_FAILURE, False),
        (Reply(429, "TooManyRequests"), DeliveryStatus.THROTTLED, False),
    ],
)
def test_apple_answers_map_to_outcomes(
    fake: FakeApns, reply: Reply, status: DeliveryStatus, deactivate: bool
) -> None:
    token = device_token()
    fake.script(token, [reply])
    outcome = send_one(apns(fake), delivery(token=token), token_channel())
    assert outcome.status is status
    assert outcome.status_code == reply.status
    assert outcome.deactivate_endpoint is deactivate
    assert outcome.retry_after is None
    message = push_status(outcome)
    assert message["channelType"] == "APNS"
    assert message["pushProviderStatusCode"] == str(reply.status)
    assert message["pushProviderError"] == reply.reason
    assert json.loads(message["pushProviderResponse"])["reason"] == reply.reason


def test_throttled_carries_retry_after(fake: FakeApns) -> None:
    token = device_token()
    fake.script(token, [Reply(429, "TooManyRequests", retry_after=7)])
    outcome = send_one(apns(fake), delivery(token=token), token_channel())
    assert outcome.status is DeliveryStatus.THROTTLED
    assert outcome.retry_after == 7.0


def test_token_for_another_app_deactivates_the_endpoint(fake: FakeApns) -> None:
    channel = token_channel(BundleId="com.example.other")
    outcome = send_one(apns(fake), delivery(), channel)
    assert fake.requests[0].reason == "DeviceTokenNotForTopic"
    assert outcome.status is DeliveryStatus.PERMANENT_FAILURE
    assert outcome.status_code == 400
    assert outcome.deactivate_endpoint


def test_rejected_token_key_names_the_channel_credential(fake: FakeApns) -> None:
    # Same key id and team, but not the key Apple (the fake) knows: the signature fails.
    channel = token_channel("APNS_SANDBOX", key_pem=make_token_key())
    outcome = send_one(apns(fake), delivery(channel_type="APNS_SANDBOX"), channel)
    [request] = fake.requests
    assert request.jwt_header is not None and request.jwt_claims is None  # not verified
    assert outcome.status is DeliveryStatus.PERMANENT_FAILURE
    assert outcome.status_code == 403
    assert not outcome.deactivate_endpoint
    assert push_status(outcome)["errorMessage"].startswith(
        "APNs rejected the APNS_SANDBOX channel's token key: InvalidProviderToken"
    )


def test_no_answer_in_time_is_timeout_and_frees_the_stream() -> None:
    # One stream per connection: a hung stream that was not reset and released would force
    # the second send onto a new connection.
    with FakeApns(BUNDLE, max_concurrent_streams=1) as fake:
        fake.register_token_key(KEY_ID, TEAM_ID, KEY_PEM)
        token = device_token()
        fake.script(token, [HANG])

        async def scenario(provider: ApnsProvider) -> tuple[Outcome, float, Outcome]:
            await provider.send(delivery(), token_channel())  # connection up
            started = time.monotonic()
            hung = await provider.send(delivery(token=token), token_channel())
            elapsed = time.monotonic() - started
            after = await provider.send(delivery(), token_channel())
            return hung, elapsed, after

        provider = ApnsProvider(settings_for(fake.url, fake=fake, timeout=0.5))
        hung, elapsed, after = drive(provider, scenario)
        assert hung.status is DeliveryStatus.TIMEOUT
        assert hung.status_code == 504
        assert 0.5 <= elapsed < 1.5
        assert after.status is DeliveryStatus.SUCCESSFUL
        assert [r.status for r in fake.requests] == [200, None, 200]
        assert fake.connections == 1


def test_server_down_is_temporary_failure() -> None:
    with FakeApns(BUNDLE) as fake:
        url = fake.url
    started = time.monotonic()
    outcome = send_one(ApnsProvider(settings_for(url, fake=fake)), delivery(), token_channel())
    assert time.monotonic() - started < 2
    assert outcome.status is DeliveryStatus.TEMPORARY_FAILURE
    assert outcome.status_code == 503
    assert "Could not reach APNs" in push_status(outcome)["errorMessage"]


def test_connection_closed_by_apns_is_temporary_and_reconnects(fake: FakeApns) -> None:
    token = device_token()
    fake.script(token, [SHUTDOWN])
    outcomes = send_all(
        apns(fake), [delivery(), delivery(token=token), delivery()], token_channel()
    )
    assert [o.status for o in outcomes] == [
        DeliveryStatus.SUCCESSFUL,
        DeliveryStatus.TEMPORARY_FAILURE,
        DeliveryStatus.SUCCESSFUL,
    ]
    assert outcomes[1].status_code == 503
    assert "Shutdown" in push_status(outcomes[1])["errorMessage"]
    first, closed, after = fake.requests
    assert first.connection == closed.connection
    assert after.connection == closed.connection + 1


def test_retry_of_a_delivery_keeps_its_apns_id(fake: FakeApns) -> None:
    item = delivery()
    fake.script(item.address, [Reply(503, "ServiceUnavailable")])
    first, second = send_all(
        apns(fake), [item, dataclasses.replace(item, attempt=2)], token_channel()
    )
    assert first.status is DeliveryStatus.TEMPORARY_FAILURE
    assert second.status is DeliveryStatus.SUCCESSFUL
    assert second.message_id == item.delivery_id
    assert [r.headers["apns-id"] for r in fake.requests] == [item.delivery_id] * 2


# --- connections ---------------------------------------------------------------------------


def test_flow_control_credit_is_returned() -> None:
    """2,000 notifications, 100 in flight, over one connection, with ~90 KB of error bodies:
    more than the 64 KiB HTTP/2 window, so a client that never returns credit stalls."""
    with FakeApns(BUNDLE) as fake:
        fake.register_token_key(KEY_ID, TEAM_ID, KEY_PEM)
        tokens = [device_token() for _ in range(2000)]
        alive = set(tokens[::10])

        def answer(request: RecordedRequest) -> Reply:
            return Reply(200) if request.token in alive else Reply(410, "Unregistered")

        fake.respond_with(answer)
        channel = token_channel()

        async def scenario(provider: ApnsProvider) -> list[Outcome]:
            in_flight = asyncio.Semaphore(100)

            async def one(token: str) -> Outcome:
                async with in_flight:
                    return await provider.send(delivery(token=token), channel)

            return await asyncio.gather(*(one(t) for t in tokens))

        # A stalled connection shows as TIMEOUT outcomes; the bound is generous so that a
        # busy machine is not mistaken for a stall.
        provider = ApnsProvider(settings_for(fake.url, fake=fake, timeout=30.0))
        outcomes = drive(provider, scenario)

    assert fake.response_bytes > 65_535
    assert fake.connections == 1
    assert len(fake.requests) == 2000
    for token, outcome in zip(tokens, outcomes, strict=True):
        if token in alive:
            assert outcome.status is DeliveryStatus.SUCCESSFUL
        else:
            assert outcome.status is DeliveryStatus.PERMANENT_FAILURE, outcome
            assert outcome.deactivate_endpoint


def test_small_peer_window_request_bodies_wait_for_credit() -> None:
    with FakeApns(BUNDLE, initial_window_size=1000) as fake:
        fake.register_token_key(KEY_ID, TEAM_ID, KEY_PEM)
        body = "w" * 3000
        # The first send opens the connection and lets the fake's SETTINGS arrive; the second
        # must then be cut to the 1,000-byte stream window and wait for WINDOW_UPDATEs.
        warm_up, outcome = send_all(
            apns(fake), [delivery(), delivery(PushNotification(body=body))], token_channel()
        )
        assert warm_up.status is DeliveryStatus.SUCCESSFUL
        assert outcome.status is DeliveryStatus.SUCCESSFUL, outcome
        assert fake.requests[1].payload["aps"]["alert"]["body"] == body


def test_one_pool_per_channel_configuration(fake: FakeApns) -> None:
    channel = token_channel()
    updated = dataclasses.replace(channel, version=2)

    async def scenario(provider: ApnsProvider) -> list[Outcome]:
        outcomes = [await provider.send(delivery(), channel) for _ in range(3)]
        return outcomes + [await provider.send(delivery(), updated) for _ in range(2)]

    outcomes = drive(apns(fake), scenario)
    assert {o.status for o in outcomes} == {DeliveryStatus.SUCCESSFUL}
    first = fake.requests[0].connection
    assert [r.connection for r in fake.requests] == [first] * 3 + [first + 1] * 2


# --- certificate auth and credentials -------------------------------------------------------


def cert_channel(cert_pem: str, key_pem: str, **settings: Any) -> ChannelConfig:
    return channel_config(
        "APNS",
        settings={"DefaultAuthenticationMethod": "CERTIFICATE", **settings},
        credentials={"Certificate": cert_pem, "PrivateKey": key_pem},
    )


def test_certificate_auth(fake: FakeApns) -> None:
    cert_pem, key_pem = make_client_cert(BUNDLE, fake.ca)
    # No BundleId: the topic comes from the certificate's UID, as Apple issues them.
    outcome = send_one(apns(fake), delivery(), cert_channel(cert_pem, key_pem))
    assert outcome.status is DeliveryStatus.SUCCESSFUL, outcome
    [request] = fake.requests
    assert "authorization" not in request.headers
    assert request.client_cert is not None
    subject = {k: v for rdn in request.client_cert["subject"] for k, v in rdn}
    assert subject["userId"] == BUNDLE
    assert request.headers["apns-topic"] == BUNDLE


def test_preferred_authentication_method_wins(fake: FakeApns) -> None:
    cert_pem, key_pem = make_client_cert(BUNDLE, fake.ca)
    channel = token_channel()
    channel = dataclasses.replace(
        channel, credentials={**channel.credentials, "Certificate": cert_pem, "PrivateKey": key_pem}
    )
    items = [
        delivery(
            PushNotification(body="a", options={"PreferredAuthenticationMethod": "CERTIFICATE"})
        ),
        delivery(PushNotification(body="b")),
    ]
    outcomes = send_all(apns(fake), items, channel)
    assert [o.status for o in outcomes] == [DeliveryStatus.SUCCESSFUL] * 2
    by_cert, by_token = fake.requests
    assert "authorization" not in by_cert.headers and by_cert.client_cert
    assert by_token.jwt_claims is not None and not by_token.client_cert


@pytest.mark.parametrize(
    ("channel", "message"),
    [
        (token_channel(TeamId=""), "has no TeamId for token authentication"),
        (token_channel(key_pem="-----BEGIN PRIVATE KEY-----\nnope\n"), "TokenKey is not an APNs"),
        (channel_config("APNS"), "APNS channel has no credentials"),
        (
            cert_channel(*make_client_cert(BUNDLE, days=-1)),
            "certificate expired",
        ),
        (
            cert_channel(make_client_cert(BUNDLE)[0], make_client_cert(BUNDLE)[1]),
            "cannot be used together",
        ),
        (token_channel(DefaultAuthenticationMethod="PASSWORD"), "neither TOKEN nor CERTIFICATE"),
    ],
)
def test_unusable_credentials_are_refused_without_a_request(
    fake: FakeApns, channel: ChannelConfig, message: str
) -> None:
    outcome = send_one(apns(fake), delivery(), channel)
    assert outcome.status is DeliveryStatus.PERMANENT_FAILURE
    assert message in push_status(outcome)["errorMessage"]
    assert fake.requests == []
