"""The FCM HTTP v1 adapter: pure builders and classification, then I/O against the FCM fake."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.fcm import FakeFcm, make_service_account
from tests.fakes.http import Reply, unused_port
from tests.providers import (
    channel_config,
    drive,
    provider_settings,
    push_delivery,
    push_status,
    send_all,
    send_one,
    serve,
)
from worker.core.config import Settings
from worker.core.vocabulary import (
    ChannelConfig,
    DeliveryStatus,
    Outcome,
    OutgoingMessage,
    PushNotification,
)
from worker.providers.android import PayloadError
from worker.providers.fcm import (
    FCM_ERRORS,
    FcmProvider,
    build_fcm_message,
    classify_fcm_response,
    fcm_payload_size,
)

TOKEN = "fcm-token-0001"


@pytest.fixture
def fcm() -> Iterator[FakeFcm]:
    yield from serve(FakeFcm())


def settings_for(fake: FakeFcm, **overrides: Any) -> Settings:
    return provider_settings(fcm_url=fake.base_url, fcm_token_url=fake.token_url, **overrides)


def gcm_channel(service_account: dict[str, str] | None = None, **credentials: str) -> ChannelConfig:
    if service_account is not None:
        credentials["ServiceJson"] = json.dumps(service_account)
    return channel_config(
        "GCM", settings={"DefaultAuthenticationMethod": "TOKEN"}, credentials=credentials
    )


def delivery(token: str = TOKEN, notification: PushNotification | None = None) -> OutgoingMessage:
    return push_delivery("GCM", token, notification)


def status_message(outcome: Outcome) -> dict[str, str]:
    return push_status(outcome, "GCM")


# --- pure builders --------------------------------------------------------------------------


def test_build_message_is_a_pinpoint_data_message() -> None:
    notification = PushNotification(
        title="Hello",
        body="World",
        data={"order": "42", "kind": "receipt"},
        context={"campaign": "spring"},
    )
    assert build_fcm_message(notification, TOKEN) == {
        "message": {
            "token": TOKEN,
            "data": {
                "campaign": "spring",
                "pinpoint.notification.title": "Hello",
                "pinpoint.notification.body": "World",
                "pinpoint.openApp": "true",
                "pinpoint.jsonBody": '{"order":"42","kind":"receipt"}',
                "pinpoint.notification.silentPush": "0",
            },
        }
    }


def test_build_message_android_options_and_images() -> None:
    notification = PushNotification(
        title="T",
        body="B",
        silent_push=True,
        sound="chime",
        options={
            "Priority": "10",
            "TimeToLive": "3600",
            "CollapseKey": "news",
            "RestrictedPackageName": "com.example.app",
            "ImageUrl": "https://img.example/big.png",
            "ImageIconUrl": "https://img.example/icon.png",
            "SmallImageIconUrl": "https://img.example/small.png",
            "IconReference": "ic_stat",
        },
    )
    message = build_fcm_message(notification, TOKEN)["message"]
    assert message["android"] == {
        "priority": "high",
        "ttl": "3600s",
        "collapse_key": "news",
        "restricted_package_name": "com.example.app",
    }
    assert message["data"] == {
        "pinpoint.notification.title": "T",
        "pinpoint.notification.body": "B",
        "pinpoint.openApp": "true",
        "pinpoint.notification.silentPush": "1",
        "pinpoint.notification.sound": "chime",
        "pinpoint.notification.imageUrl": "https://img.example/big.png",
        "pinpoint.notification.imageIconUrl": "https://img.example/icon.png",
        "pinpoint.notification.imageSmallIconUrl": "https://img.example/small.png",
        "pinpoint.notification.icon": "ic_stat",
    }


@pytest.mark.parametrize(
    ("priority", "expected"),
    [
        ("high", "high"),
        ("HIGH", "high"),
        ("10", "high"),
        (10, "high"),
        ("normal", "normal"),
        ("5", "normal"),
    ],
)
def test_priority_accepts_fcm_and_apns_spellings(priority: Any, expected: str) -> None:
    notification = PushNotification(body="x", options={"Priority": priority})
    assert build_fcm_message(notification, TOKEN)["message"]["android"] == {"priority": expected}


def test_invalid_priority_and_ttl_are_payload_errors() -> None:
    with pytest.raises(PayloadError, match="Priority"):
        build_fcm_message(PushNotification(options={"Priority": "urgent"}), TOKEN)
    with pytest.raises(PayloadError, match="TimeToLive"):
        build_fcm_message(PushNotification(options={"TimeToLive": "soon"}), TOKEN)
    with pytest.raises(PayloadError, match="TimeToLive"):
        build_fcm_message(PushNotification(options={"TimeToLive": -1}), TOKEN)


def test_ttl_zero_is_kept_and_long_ttl_is_capped_at_28_days() -> None:
    zero = build_fcm_message(PushNotification(options={"TimeToLive": 0}), TOKEN)
    assert zero["message"]["android"] == {"ttl": "0s"}
    long = build_fcm_message(PushNotification(options={"TimeToLive": 10**8}), TOKEN)
    assert long["message"]["android"] == {"ttl": "2419200s"}


def test_raw_content_with_message_is_verbatim_but_addressed_to_the_endpoint() -> None:
    raw = {
        "message": {"token": "someone-else", "notification": {"title": "Raw"}},
        "validate_only": False,
    }
    built = build_fcm_message(PushNotification(raw_content=json.dumps(raw), title="ignored"), TOKEN)
    assert built == {
        "message": {"token": TOKEN, "notification": {"title": "Raw"}},
        "validate_only": False,
    }


def test_raw_content_without_message_is_wrapped_and_legacy_keys_translated() -> None:
    raw = {
        "to": "legacy-recipient",
        "priority": "high",
        "time_to_live": 120,
        "collapse_key": "c",
        "data": {"n": 1, "s": "x"},
        "notification": {"title": "Raw"},
    }
    built = build_fcm_message(PushNotification(raw_content=json.dumps(raw)), TOKEN)
    assert built == {
        "message": {
            "token": TOKEN,
            "data": {"n": "1", "s": "x"},
            "notification": {"title": "Raw"},
            "android": {"priority": "high", "ttl": "120s", "collapse_key": "c"},
        }
    }


@pytest.mark.parametrize("raw", ["not json", "[1, 2]", '"text"', '{"message": []}'])
def test_raw_content_must_be_a_json_object(raw: str) -> None:
    with pytest.raises(PayloadError, match="RawContent"):
        build_fcm_message(PushNotification(raw_content=raw), TOKEN)


def test_payload_size_counts_data_and_notification_keys_and_values() -> None:
    message = {
        "message": {"token": "t" * 500, "data": {"ab": "cdé"}, "notification": {"title": "xy"}}
    }
    assert fcm_payload_size(message) == 2 + 4 + 5 + 2


# --- classification (pure) -----------------------------------------------------------------


def google_error(status: int, rpc: str, code: str | None, message: str = "msg") -> str:
    details = []
    if code is not None:
        details.append(
            {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}
        )
    return json.dumps(
        {"error": {"code": status, "message": message, "status": rpc, "details": details}}
    )


@pytest.mark.parametrize(
    ("http", "rpc", "code", "status", "deactivate"),
    [
        (404, "NOT_FOUND", "UNREGISTERED", DeliveryStatus.PERMANENT_FAILURE, True),
        (400, "INVALID_ARGUMENT", "INVALID_ARGUMENT", DeliveryStatus.PERMANENT_FAILURE, False),
        (403, "PERMISSION_DENIED", "SENDER_ID_MISMATCH", DeliveryStatus.PERMANENT_FAILURE, True),
        (429, "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", DeliveryStatus.THROTTLED, False),
        (503, "UNAVAILABLE", "UNAVAILABLE", DeliveryStatus.TEMPORARY_FAILURE, False),
        (500, "INTERNAL", "INTERNAL", DeliveryStatus.TEMPORARY_FAILURE, False),
        (401, "UNAUTHENTICATED", "THIRD_PARTY_AUTH_ERROR", DeliveryStatus.PERMANENT_FAILURE, False),
        (403, "PERMISSION_DENIED", None, DeliveryStatus.PERMANENT_FAILURE, False),
        (404, "NOT_FOUND", None, DeliveryStatus.PERMANENT_FAILURE, False),
        (502, "", None, DeliveryStatus.TEMPORARY_FAILURE, False),
        (429, "", None, DeliveryStatus.THROTTLED, False),
    ],
)
def test_classification_table(
    http: int, rpc: str, code: str | None, status: DeliveryStatus, deactivate: bool
) -> None:
    outcome = classify_fcm_response(http, google_error(http, rpc, code), {"retry-after": "12"})
    assert (outcome.status, outcome.status_code, outcome.deactivate_endpoint) == (
        status,
        http,
        deactivate,
    )
    assert outcome.retry_after == (12.0 if status.retryable else None)
    assert status_message(outcome)["pushProviderError"] == (code or rpc)


def test_every_documented_code_has_a_row() -> None:
    assert set(FCM_ERRORS) == {
        "UNREGISTERED",
        "INVALID_ARGUMENT",
        "SENDER_ID_MISMATCH",
        "QUOTA_EXCEEDED",
        "UNAVAILABLE",
        "INTERNAL",
        "THIRD_PARTY_AUTH_ERROR",
    }


def test_non_json_gateway_error_is_temporary() -> None:
    outcome = classify_fcm_response(502, "<html>Bad Gateway</html>", {})
    assert outcome.status is DeliveryStatus.TEMPORARY_FAILURE
    assert status_message(outcome)["pushProviderResponse"] == "<html>Bad Gateway</html>"


def test_a_provider_answer_is_trimmed_before_it_reaches_results() -> None:
    outcome = classify_fcm_response(502, "<html>" + "internal detail " * 400, {})
    assert len(status_message(outcome)["pushProviderResponse"]) <= 513


# --- the token endpoint is Herald's, never the tenant's ---------------------------------------


def test_service_json_token_uri_is_never_contacted(fcm: FakeFcm) -> None:
    """A tenant's ServiceJson pointing token_uri at an internal service: the worker neither
    connects there nor copies its answer into the result (issue 14, SSRF with read-back)."""
    with FakeFcm() as internal:
        internal.script(None, lambda _r: Reply(401, {"error": "internal-secret-document"}))
        account = fcm.add_service_account()
        account["token_uri"] = internal.token_url
        outcome = send_one(FcmProvider(settings_for(fcm)), delivery(), gcm_channel(account))
        assert internal.requests == []
    assert outcome.status is DeliveryStatus.SUCCESSFUL
    assert "internal-secret-document" not in (outcome.status_message or "")
    assert len(fcm.token_requests()) == 1


def test_token_url_comes_from_configuration(fcm: FakeFcm) -> None:
    account = fcm.add_service_account()
    with FakeFcm() as elsewhere:
        elsewhere.trust(account)
        outcome = send_one(
            FcmProvider(provider_settings(fcm_url=fcm.base_url, fcm_token_url=elsewhere.token_url)),
            delivery(), gcm_channel(account),
        )
        # The fake FCM accepts only tokens it issued itself: a token from `elsewhere` is a 401.
        assert len(elsewhere.token_requests()) >= 1
    assert fcm.token_requests() == []
    assert outcome.status is DeliveryStatus.PERMANENT_FAILURE


# --- against the fake: success, payload, headers --------------------------------------------


def test_success_sends_the_exact_message_with_a_bearer_token(fcm: FakeFcm) -> None:
    account = fcm.add_service_account(project_id="demo-project")
    notification = PushNotification(
        title="Hello",
        body="World",
        action="URL",
        url="https://example.com",
        data={"k": "v"},
        context={"ctx": "1"},
        options={"Priority": "normal", "TimeToLive": 60},
    )
    outcome = send_one(
        FcmProvider(settings_for(fcm)), delivery(TOKEN, notification), gcm_channel(account)
    )

    assert outcome.status is DeliveryStatus.SUCCESSFUL
    assert outcome.status_code == 200
    assert outcome.message_id == "projects/demo-project/messages/0:0000000000000001"
    [token_request] = fcm.token_requests()
    assert token_request.form()["grant_type"] == "urn:ietf:params:oauth:grant-type:jwt-bearer"
    [send] = fcm.sends()
    assert send.path == "/v1/projects/demo-project/messages:send"
    assert send.headers["authorization"] == "Bearer ya29.fake-1"
    assert send.headers["content-type"].startswith("application/json")
    assert send.json() == {
        "message": {
            "token": TOKEN,
            "data": {
                "ctx": "1",
                "pinpoint.notification.title": "Hello",
                "pinpoint.notification.body": "World",
                "pinpoint.url": "https://example.com",
                "pinpoint.jsonBody": '{"k":"v"}',
                "pinpoint.notification.silentPush": "0",
            },
            "android": {"priority": "normal", "ttl": "60s"},
        }
    }


def test_raw_content_is_sent_verbatim(fcm: FakeFcm) -> None:
    account = fcm.add_service_account()
    raw = {
        "message": {"token": "x", "data": {"custom": "payload"}, "android": {"priority": "high"}}
    }
    outcome = send_one(
        FcmProvider(settings_for(fcm)),
        delivery(TOKEN, PushNotification(raw_content=json.dumps(raw))),
        gcm_channel(account),
    )
    assert outcome.status is DeliveryStatus.SUCCESSFUL
    assert fcm.sends()[0].json() == {
        "message": {"token": TOKEN, "data": {"custom": "payload"}, "android": {"priority": "high"}}
    }


def test_tls_with_extra_ca_bundle(tmp_path: Any) -> None:
    with FakeFcm(tls=True) as fake:
        account = fake.add_service_account()
        assert fake.ca_path is not None
        trusted = send_one(
            FcmProvider(settings_for(fake, ca_bundle=fake.ca_path)),
            delivery(),
            gcm_channel(account),
        )
        untrusted = send_one(FcmProvider(settings_for(fake)), delivery(), gcm_channel(account))
    assert trusted.status is DeliveryStatus.SUCCESSFUL
    assert untrusted.status is DeliveryStatus.TEMPORARY_FAILURE
    assert "CERTIFICATE_VERIFY_FAILED" in status_message(untrusted)["errorMessage"]


# --- against the fake: every mapping row ----------------------------------------------------


@pytest.mark.parametrize(
    ("code", "kwargs", "status", "http", "deactivate", "retry_after"),
    [
        ("UNREGISTERED", {}, DeliveryStatus.PERMANENT_FAILURE, 404, True, None),
        ("INVALID_ARGUMENT", {}, DeliveryStatus.PERMANENT_FAILURE, 400, True, None),
        (
            "INVALID_ARGUMENT",
            {"field": "message.android.ttl", "message": "Invalid value at 'message.android.ttl'"},
            DeliveryStatus.PERMANENT_FAILURE,
            400,
            False,
            None,
        ),
        ("SENDER_ID_MISMATCH", {}, DeliveryStatus.PERMANENT_FAILURE, 403, True, None),
        ("QUOTA_EXCEEDED", {"retry_after": 30}, DeliveryStatus.THROTTLED, 429, False, 30.0),
        ("UNAVAILABLE", {"retry_after": 7}, DeliveryStatus.TEMPORARY_FAILURE, 503, False, 7.0),
        ("UNAVAILABLE", {}, DeliveryStatus.TEMPORARY_FAILURE, 503, False, None),
        ("INTERNAL", {}, DeliveryStatus.TEMPORARY_FAILURE, 500, False, None),
        ("THIRD_PARTY_AUTH_ERROR", {}, DeliveryStatus.PERMANENT_FAILURE, 401, False, None),
    ],
)
def test_fcm_errors_map_to_outcomes(
    fcm: FakeFcm,
    code: str,
    kwargs: dict[str, Any],
    status: DeliveryStatus,
    http: int,
    deactivate: bool,
    retry_after: float | None,
) -> None:
    account = fcm.add_service_account()
    fcm.fail(TOKEN, code, **kwargs)
    outcome = send_one(FcmProvider(settings_for(fcm)), delivery(), gcm_channel(account))

    assert outcome.status is status
    assert outcome.status_code == http
    assert outcome.deactivate_endpoint is deactivate
    assert outcome.retry_after == retry_after
    assert outcome.message_id is None
    message = status_message(outcome)
    assert message["pushProviderStatusCode"] == str(http)
    assert message["pushProviderError"] == code
    assert json.loads(message["pushProviderResponse"])["error"]["code"] == http
    # Herald never retries on its own: exactly one send per attempt, even for THIRD_PARTY 401.
    assert len(fcm.sends()) == 1


def test_a_healthy_token_is_unaffected_by_another_tokens_script(fcm: FakeFcm) -> None:
    account = fcm.add_service_account()
    fcm.fail("dead", "UNREGISTERED")
    outcomes = send_all(
        FcmProvider(settings_for(fcm)), [delivery("dead"), delivery("alive")], gcm_channel(account)
    )
    assert [o.status for o in outcomes] == [
        DeliveryStatus.PERMANENT_FAILURE,
        DeliveryStatus.SUCCESSFUL,
    ]


# --- OAuth token: caching, refresh, refusal -------------------------------------------------


def test_one_token_for_many_sends(fcm: FakeFcm) -> None:
    account = fcm.add_service_account()
    outcomes = send_all(
        FcmProvider(settings_for(fcm)), [delivery(f"t{i}") for i in range(5)], gcm_channel(account)
    )
    assert all(o.status is DeliveryStatus.SUCCESSFUL for o in outcomes)
    assert fcm.token_issuances == 1
    assert len(fcm.token_requests()) == 1
    assert {s.headers["authorization"] for s in fcm.sends()} == {"Bearer ya29.fake-1"}


def test_concurrent_sends_trigger_one_refresh(fcm: FakeFcm) -> None:
    account = fcm.add_service_account()
    fcm.delay_tokens(0.2)  # every sender arrives while the first refresh is in flight
    outcomes = send_all(
        FcmProvider(settings_for(fcm)),
        [delivery(f"t{i}") for i in range(20)],
        gcm_channel(account),
        concurrent=True,
    )
    assert all(o.status is DeliveryStatus.SUCCESSFUL for o in outcomes)
    assert len(fcm.token_requests()) == 1
    assert len(fcm.sends()) == 20


def test_token_is_refreshed_shortly_before_expiry() -> None:
    with FakeFcm(token_lifetime_s=1) as fake:
        account = fake.add_service_account()

        async def scenario(provider: FcmProvider) -> None:
            await provider.send(delivery("a"), gcm_channel(account))
            await asyncio.sleep(0.6)  # past the lifetime minus its margin (half of 1 s)
            await provider.send(delivery("b"), gcm_channel(account))

        drive(FcmProvider(settings_for(fake)), scenario)
        auths = [s.headers["authorization"] for s in fake.sends()]
    assert auths == ["Bearer ya29.fake-1", "Bearer ya29.fake-2"]


def test_tokens_are_cached_per_service_account(fcm: FakeFcm) -> None:
    first = fcm.add_service_account(project_id="p-one")
    second = fcm.add_service_account(project_id="p-two", key_slot=1)

    async def scenario(provider: FcmProvider) -> list[Outcome]:
        return [
            await provider.send(delivery(), gcm_channel(account))
            for _ in range(2)
            for account in (first, second)
        ]

    outcomes = drive(FcmProvider(settings_for(fcm)), scenario)
    assert [o.status for o in outcomes] == [DeliveryStatus.SUCCESSFUL] * 4
    assert fcm.token_issuances == 2
    assert [s.path for s in fcm.sends()] == [
        "/v1/projects/p-one/messages:send",
        "/v1/projects/p-two/messages:send",
    ] * 2


def test_revoked_token_is_replaced_within_the_same_attempt(fcm: FakeFcm) -> None:
    account = fcm.add_service_account()

    async def scenario(provider: FcmProvider) -> Outcome:
        await provider.send(delivery(), gcm_channel(account))
        fcm.revoke_tokens()
        return await provider.send(delivery(), gcm_channel(account))

    outcome = drive(FcmProvider(settings_for(fcm)), scenario)
    assert outcome.status is DeliveryStatus.SUCCESSFUL
    assert [s.headers["authorization"] for s in fcm.sends()] == [
        "Bearer ya29.fake-1",
        "Bearer ya29.fake-1",
        "Bearer ya29.fake-2",
    ]


def test_provider_survives_a_new_event_loop(fcm: FakeFcm) -> None:
    # A worker may run each task in its own asyncio.run(); the token outlives the loop.
    account = fcm.add_service_account()
    provider = FcmProvider(settings_for(fcm))
    first = send_one(provider, delivery(), gcm_channel(account))
    second = send_one(provider, delivery(), gcm_channel(account))
    assert first.status is second.status is DeliveryStatus.SUCCESSFUL
    assert fcm.token_issuances == 1


def test_token_refusal_is_a_permanent_failure_naming_service_json(fcm: FakeFcm) -> None:
    account = fcm.add_service_account()
    fcm.refuse_tokens("invalid_grant", "Invalid JWT Signature.")
    outcomes = send_all(
        FcmProvider(settings_for(fcm)),
        [delivery(f"t{i}") for i in range(10)],
        gcm_channel(account),
        concurrent=True,
    )
    for outcome in outcomes:
        assert outcome.status is DeliveryStatus.PERMANENT_FAILURE
        assert outcome.status_code == 400
        assert not outcome.deactivate_endpoint
        message = status_message(outcome)
        assert "ServiceJson" in message["errorMessage"]
        assert "invalid_grant: Invalid JWT Signature." in message["errorMessage"]
        assert message["pushProviderError"] == "invalid_grant"
    assert fcm.sends() == []
    assert len(fcm.token_requests()) == 1  # the refusal is remembered for the same credentials


def test_fake_verifies_the_assertion_signature(fcm: FakeFcm) -> None:
    account = fcm.add_service_account()
    forged = dict(account, private_key=make_service_account("x", key_slot=1)["private_key"])
    outcome = send_one(FcmProvider(settings_for(fcm)), delivery(), gcm_channel(forged))
    assert outcome.status is DeliveryStatus.PERMANENT_FAILURE
    assert "Invalid JWT Signature." in status_message(outcome)["errorMessage"]
    assert fcm.sends() == []


def test_unknown_service_account_is_refused(fcm: FakeFcm) -> None:
    stranger = make_service_account()  # never trusted by the fake
    outcome = send_one(FcmProvider(settings_for(fcm)), delivery(), gcm_channel(stranger))
    assert outcome.status is DeliveryStatus.PERMANENT_FAILURE
    assert "account not found" in status_message(outcome)["errorMessage"]


def test_token_endpoint_outage_is_temporary(fcm: FakeFcm) -> None:
    account = fcm.add_service_account()
    fcm.refuse_tokens("server_error", "backend down", status=503)
    outcomes = send_all(
        FcmProvider(settings_for(fcm)), [delivery(), delivery()], gcm_channel(account)
    )
    assert [o.status for o in outcomes] == [DeliveryStatus.TEMPORARY_FAILURE] * 2
    assert len(fcm.token_requests()) == 2  # an outage is not remembered like a refusal


# --- credentials checked before any request -----------------------------------------------


@pytest.mark.parametrize(
    ("credentials", "expected"),
    [
        ({"ApiKey": "AIzaLegacyServerKey"}, "shut down by Google in 2024"),
        ({}, "no ServiceJson"),
        ({"ServiceJson": "{not json"}, "ServiceJson is not valid JSON"),
        (
            {"ServiceJson": '{"project_id": "p"}'},
            "ServiceJson lacks private_key, client_email",
        ),
        (
            {
                "ServiceJson": json.dumps(
                    {
                        "project_id": "p",
                        "private_key": "nope",
                        "client_email": "e",
                        "token_uri": "u",
                    }
                )
            },
            "not a PEM private key",
        ),
    ],
)
def test_unusable_credentials_fail_permanently_without_a_request(
    fcm: FakeFcm, credentials: dict[str, str], expected: str
) -> None:
    outcome = send_one(FcmProvider(settings_for(fcm)), delivery(), gcm_channel(None, **credentials))
    assert outcome.status is DeliveryStatus.PERMANENT_FAILURE
    assert expected in status_message(outcome)["errorMessage"]
    assert fcm.requests == []


def test_payload_over_4kb_fails_before_any_request(fcm: FakeFcm) -> None:
    account = fcm.add_service_account()
    big = PushNotification(title="x", body="y" * 4096)
    outcome = send_one(FcmProvider(settings_for(fcm)), delivery(TOKEN, big), gcm_channel(account))
    assert outcome.status is DeliveryStatus.PERMANENT_FAILURE
    assert outcome.status_code == 400
    assert "too big" in status_message(outcome)["errorMessage"]
    assert fcm.requests == []


def test_payload_just_under_the_limit_is_sent(fcm: FakeFcm) -> None:
    account = fcm.add_service_account()
    base = fcm_payload_size(build_fcm_message(PushNotification(body=""), TOKEN))
    fits = PushNotification(body="y" * (4096 - base))
    outcome = send_one(FcmProvider(settings_for(fcm)), delivery(TOKEN, fits), gcm_channel(account))
    assert outcome.status is DeliveryStatus.SUCCESSFUL


def test_invalid_option_fails_before_any_request(fcm: FakeFcm) -> None:
    account = fcm.add_service_account()
    bad = PushNotification(body="x", options={"Priority": "urgent"})
    outcome = send_one(FcmProvider(settings_for(fcm)), delivery(TOKEN, bad), gcm_channel(account))
    assert outcome.status is DeliveryStatus.PERMANENT_FAILURE
    assert "Priority" in status_message(outcome)["errorMessage"]
    assert fcm.requests == []


# --- no answer ------------------------------------------------------------------------------


def test_send_that_hangs_is_a_timeout(fcm: FakeFcm) -> None:
    account = fcm.add_service_account()
    fcm.hang(TOKEN, 5)
    started = time.monotonic()
    outcome = send_one(
        FcmProvider(settings_for(fcm, provider_timeout_s=0.3)), delivery(), gcm_channel(account)
    )
    assert time.monotonic() - started < 3
    assert outcome.status is DeliveryStatus.TIMEOUT
    assert outcome.status_code == 504
    assert "did not answer within 0.3 s" in status_message(outcome)["errorMessage"]


def test_token_endpoint_that_hangs_is_a_timeout(fcm: FakeFcm) -> None:
    account = fcm.add_service_account()
    fcm.delay_tokens(5)
    outcome = send_one(
        FcmProvider(settings_for(fcm, provider_timeout_s=0.3)), delivery(), gcm_channel(account)
    )
    assert outcome.status is DeliveryStatus.TIMEOUT
    assert fcm.sends() == []


def test_unreachable_fcm_is_a_temporary_failure(fcm: FakeFcm) -> None:
    account = fcm.add_service_account()  # the token endpoint answers; FCM itself is gone
    settings = provider_settings(
        fcm_url=f"http://127.0.0.1:{unused_port()}", fcm_token_url=fcm.token_url
    )
    outcome = send_one(FcmProvider(settings), delivery(), gcm_channel(account))
    assert outcome.status is DeliveryStatus.TEMPORARY_FAILURE
    assert outcome.status_code == 503
    assert "could not reach FCM" in status_message(outcome)["errorMessage"]
    assert len(fcm.token_requests()) == 1
