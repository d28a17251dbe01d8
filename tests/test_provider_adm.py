"""The ADM adapter: pure builder and classification, then I/O against the ADM fake."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.adm import FakeAdm
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
from worker.providers.adm import (
    ADM_ERRORS,
    AdmProvider,
    adm_payload_size,
    build_adm_message,
    classify_adm_response,
)
from worker.providers.android import PayloadError

REG_ID = "amzn1.adm-registration.v3.Y29tLmV4YW1wbGUuYXBwLzEyMzQ1Njc4OTA"


@pytest.fixture
def adm() -> Iterator[FakeAdm]:
    yield from serve(FakeAdm())


def settings_for(fake: FakeAdm, timeout: float = 2.0) -> Settings:
    return provider_settings(adm_url=fake.base_url, provider_timeout_s=timeout)


def adm_channel(
    fake: FakeAdm, *, client_id_in_settings: bool = False, secret: str | None = None
) -> ChannelConfig:
    credentials = {"ClientSecret": secret if secret is not None else fake.client_secret}
    settings: dict[str, Any] = {}
    if client_id_in_settings:
        settings["ClientId"] = fake.client_id
    else:
        credentials["ClientId"] = fake.client_id
    return channel_config("ADM", settings=settings, credentials=credentials)


def delivery(
    address: str = REG_ID, notification: PushNotification | None = None
) -> OutgoingMessage:
    return push_delivery("ADM", address, notification)


def status_message(outcome: Outcome) -> dict[str, str]:
    return push_status(outcome, "ADM")


# --- pure builder ---------------------------------------------------------------------------


def test_build_message_is_a_pinpoint_data_message() -> None:
    notification = PushNotification(
        title="Hello",
        body="World",
        action="DEEP_LINK",
        url="myapp://x",
        data={"a": "1"},
        context={"c": "2"},
        options={
            "ConsolidationKey": "sync",
            "ExpiresAfter": "3600",
            "MD5": "rIdbfh8ZRaIvEK5hQkAkpA==",
        },
    )
    assert build_adm_message(notification) == {
        "data": {
            "c": "2",
            "pinpoint.notification.title": "Hello",
            "pinpoint.notification.body": "World",
            "pinpoint.deeplink": "myapp://x",
            "pinpoint.url": "myapp://x",
            "pinpoint.jsonBody": '{"a":"1"}',
            "pinpoint.notification.silentPush": "0",
        },
        "consolidationKey": "sync",
        "expiresAfter": 3600,
        "md5": "rIdbfh8ZRaIvEK5hQkAkpA==",
    }


def test_build_message_minimal_has_no_optional_members() -> None:
    assert set(build_adm_message(PushNotification(body="x"))) == {"data"}


def test_time_to_live_is_the_fallback_for_expires_after() -> None:
    assert build_adm_message(PushNotification(options={"TimeToLive": 60}))["expiresAfter"] == 60


def test_invalid_expires_after_is_a_payload_error() -> None:
    with pytest.raises(PayloadError, match="ExpiresAfter"):
        build_adm_message(PushNotification(options={"ExpiresAfter": "a week"}))


def test_raw_content_is_the_whole_body() -> None:
    raw = {"data": {"x": "y"}, "consolidationKey": "k"}
    assert build_adm_message(PushNotification(raw_content=json.dumps(raw), body="ignored")) == raw
    with pytest.raises(PayloadError, match="RawContent"):
        build_adm_message(PushNotification(raw_content="[]"))


def test_payload_size_is_the_serialised_data() -> None:
    assert adm_payload_size({"data": {"k": "é"}}) == len('{"k":"é"}'.encode())


# --- classification (pure) -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("http", "reason", "status", "deactivate"),
    [
        (400, "InvalidRegistrationId", DeliveryStatus.PERMANENT_FAILURE, True),
        (400, "Unregistered", DeliveryStatus.PERMANENT_FAILURE, True),
        (410, "Unregistered", DeliveryStatus.PERMANENT_FAILURE, True),
        (410, "", DeliveryStatus.PERMANENT_FAILURE, True),
        (400, "InvalidData", DeliveryStatus.PERMANENT_FAILURE, False),
        (400, "InvalidConsolidationKey", DeliveryStatus.PERMANENT_FAILURE, False),
        (400, "InvalidExpiration", DeliveryStatus.PERMANENT_FAILURE, False),
        (400, "InvalidChecksum", DeliveryStatus.PERMANENT_FAILURE, False),
        (400, "InvalidType", DeliveryStatus.PERMANENT_FAILURE, False),
        (413, "MessageTooLarge", DeliveryStatus.PERMANENT_FAILURE, False),
        (401, "AccessTokenExpired", DeliveryStatus.PERMANENT_FAILURE, False),
        (429, "MaxRateExceeded", DeliveryStatus.THROTTLED, False),
        (500, "", DeliveryStatus.TEMPORARY_FAILURE, False),
        (503, "", DeliveryStatus.TEMPORARY_FAILURE, False),
        (502, "", DeliveryStatus.TEMPORARY_FAILURE, False),
        (418, "", DeliveryStatus.PERMANENT_FAILURE, False),
    ],
)
def test_classification_table(
    http: int, reason: str, status: DeliveryStatus, deactivate: bool
) -> None:
    body = json.dumps({"reason": reason}) if reason else ""
    outcome = classify_adm_response(http, body, {"retry-after": "9"}, REG_ID)
    assert (outcome.status, outcome.status_code, outcome.deactivate_endpoint) == (
        status,
        http,
        deactivate,
    )
    assert outcome.retry_after == (9.0 if status.retryable else None)
    assert status_message(outcome)["pushProviderError"] == reason


def test_every_reason_in_the_table_is_documented_by_amazon() -> None:
    assert set(ADM_ERRORS) == {
        "InvalidRegistrationId",
        "Unregistered",
        "InvalidData",
        "InvalidConsolidationKey",
        "InvalidExpiration",
        "InvalidChecksum",
        "InvalidType",
        "MessageTooLarge",
        "AccessTokenExpired",
        "MaxRateExceeded",
    }


def test_success_without_canonical_change_has_no_updated_token() -> None:
    outcome = classify_adm_response(
        200, json.dumps({"registrationID": REG_ID}), {"x-amzn-requestid": "r-1"}, REG_ID
    )
    assert (outcome.status, outcome.message_id, outcome.updated_token) == (
        DeliveryStatus.SUCCESSFUL,
        "r-1",
        None,
    )


# --- against the fake --------------------------------------------------------------------------


def test_success_sends_the_exact_request(adm: FakeAdm) -> None:
    notification = PushNotification(
        title="Hi", body="There", options={"ConsolidationKey": "k", "ExpiresAfter": 60}
    )
    outcome = send_one(
        AdmProvider(settings_for(adm)), delivery(REG_ID, notification), adm_channel(adm)
    )

    assert outcome.status is DeliveryStatus.SUCCESSFUL
    assert outcome.status_code == 200
    assert outcome.message_id == adm.request_ids[0]
    assert outcome.updated_token is None
    [token_request] = adm.token_requests()
    assert token_request.form() == {
        "grant_type": "client_credentials",
        "scope": "messaging:push",
        "client_id": adm.client_id,
        "client_secret": adm.client_secret,
    }
    [send] = adm.sends()
    assert send.path == f"/messaging/registrations/{REG_ID}/messages"
    assert send.headers["authorization"] == "Bearer Atc|fake-1"
    assert send.headers["x-amzn-type-version"] == "com.amazon.device.messaging.ADMMessage@1.0"
    assert send.headers["x-amzn-accept-type"] == "com.amazon.device.messaging.ADMSendResult@1.0"
    assert send.headers["content-type"] == "application/json"
    assert send.json() == {
        "data": {
            "pinpoint.notification.title": "Hi",
            "pinpoint.notification.body": "There",
            "pinpoint.openApp": "true",
            "pinpoint.notification.silentPush": "0",
        },
        "consolidationKey": "k",
        "expiresAfter": 60,
    }


def test_registration_id_is_escaped_in_the_path(adm: FakeAdm) -> None:
    odd = "amzn1.adm/registration+v3 x"
    outcome = send_one(AdmProvider(settings_for(adm)), delivery(odd), adm_channel(adm))
    assert outcome.status is DeliveryStatus.SUCCESSFUL
    assert (
        adm.sends()[0].path == "/messaging/registrations/amzn1.adm%2Fregistration%2Bv3%20x/messages"
    )


def test_client_id_may_be_a_channel_setting(adm: FakeAdm) -> None:
    outcome = send_one(
        AdmProvider(settings_for(adm)), delivery(), adm_channel(adm, client_id_in_settings=True)
    )
    assert outcome.status is DeliveryStatus.SUCCESSFUL


def test_canonical_registration_id_becomes_the_updated_token(adm: FakeAdm) -> None:
    adm.canonicalize(REG_ID, REG_ID + "-canonical")
    outcome = send_one(AdmProvider(settings_for(adm)), delivery(), adm_channel(adm))
    assert outcome.status is DeliveryStatus.SUCCESSFUL
    assert outcome.updated_token == REG_ID + "-canonical"
    assert not outcome.deactivate_endpoint


@pytest.mark.parametrize(
    ("reason", "kwargs", "status", "http", "deactivate", "retry_after"),
    [
        ("InvalidRegistrationId", {}, DeliveryStatus.PERMANENT_FAILURE, 400, True, None),
        ("Unregistered", {}, DeliveryStatus.PERMANENT_FAILURE, 410, True, None),
        ("InvalidData", {}, DeliveryStatus.PERMANENT_FAILURE, 400, False, None),
        ("MessageTooLarge", {}, DeliveryStatus.PERMANENT_FAILURE, 413, False, None),
        ("MaxRateExceeded", {"retry_after": 20}, DeliveryStatus.THROTTLED, 429, False, 20.0),
        (
            "InternalServerError",
            {"retry_after": 3},
            DeliveryStatus.TEMPORARY_FAILURE,
            500,
            False,
            3.0,
        ),
        ("ServiceUnavailable", {}, DeliveryStatus.TEMPORARY_FAILURE, 503, False, None),
    ],
)
def test_adm_errors_map_to_outcomes(
    adm: FakeAdm,
    reason: str,
    kwargs: dict[str, Any],
    status: DeliveryStatus,
    http: int,
    deactivate: bool,
    retry_after: float | None,
) -> None:
    adm.fail(REG_ID, reason, **kwargs)
    outcome = send_one(AdmProvider(settings_for(adm)), delivery(), adm_channel(adm))
    assert outcome.status is status
    assert outcome.status_code == http
    assert outcome.deactivate_endpoint is deactivate
    assert outcome.retry_after == retry_after
    message = status_message(outcome)
    assert message["pushProviderError"] == reason
    assert message["pushProviderStatusCode"] == str(http)
    assert len(adm.sends()) == 1


def test_expired_token_is_refreshed_once_within_the_attempt(adm: FakeAdm) -> None:
    async def scenario(provider: AdmProvider) -> Outcome:
        await provider.send(delivery(), adm_channel(adm))
        adm.expire_token_once()
        return await provider.send(delivery(), adm_channel(adm))

    outcome = drive(AdmProvider(settings_for(adm)), scenario)
    assert outcome.status is DeliveryStatus.SUCCESSFUL
    assert [s.headers["authorization"] for s in adm.sends()] == [
        "Bearer Atc|fake-1",
        "Bearer Atc|fake-1",
        "Bearer Atc|fake-2",
    ]
    assert adm.token_issuances == 2


def test_token_rejected_again_after_refresh_is_permanent(adm: FakeAdm) -> None:
    adm.fail(REG_ID, "AccessTokenExpired")
    outcome = send_one(AdmProvider(settings_for(adm)), delivery(), adm_channel(adm))
    assert outcome.status is DeliveryStatus.PERMANENT_FAILURE
    assert outcome.status_code == 401
    assert len(adm.sends()) == 2  # the original and exactly one retry with a new token
    assert adm.token_issuances == 2


def test_one_token_for_many_sends_and_one_refresh_for_concurrent_sends(adm: FakeAdm) -> None:
    sequential = send_all(
        AdmProvider(settings_for(adm)), [delivery(f"r{i}") for i in range(5)], adm_channel(adm)
    )
    assert all(o.status is DeliveryStatus.SUCCESSFUL for o in sequential)
    assert len(adm.token_requests()) == 1
    concurrent = send_all(
        AdmProvider(settings_for(adm)),
        [delivery(f"c{i}") for i in range(20)],
        adm_channel(adm),
        concurrent=True,
    )
    assert all(o.status is DeliveryStatus.SUCCESSFUL for o in concurrent)
    assert len(adm.token_requests()) == 2  # one more for the second (fresh) provider


def test_token_refusal_is_permanent_and_names_the_credentials(adm: FakeAdm) -> None:
    outcomes = send_all(
        AdmProvider(settings_for(adm)),
        [delivery(f"r{i}") for i in range(5)],
        adm_channel(adm, secret="wrong"),
        concurrent=True,
    )
    for outcome in outcomes:
        assert outcome.status is DeliveryStatus.PERMANENT_FAILURE
        assert outcome.status_code == 401
        message = status_message(outcome)
        assert "ClientId/ClientSecret" in message["errorMessage"]
        assert message["pushProviderError"] == "invalid_client"
    assert adm.sends() == []
    assert len(adm.token_requests()) == 1


def test_missing_credentials_fail_without_a_request(adm: FakeAdm) -> None:
    channel = channel_config("ADM", credentials={"ClientId": "x"})
    outcome = send_one(AdmProvider(settings_for(adm)), delivery(), channel)
    assert outcome.status is DeliveryStatus.PERMANENT_FAILURE
    assert "ClientSecret" in status_message(outcome)["errorMessage"]
    assert adm.requests == []


def test_payload_over_6kb_fails_before_any_request(adm: FakeAdm) -> None:
    big = PushNotification(body="x" * 6 * 1024)
    outcome = send_one(AdmProvider(settings_for(adm)), delivery(REG_ID, big), adm_channel(adm))
    assert outcome.status is DeliveryStatus.PERMANENT_FAILURE
    assert outcome.status_code == 413
    assert "ADM allows 6144" in status_message(outcome)["errorMessage"]
    assert adm.requests == []


def test_send_that_hangs_is_a_timeout(adm: FakeAdm) -> None:
    adm.hang(REG_ID, 5)
    started = time.monotonic()
    outcome = send_one(AdmProvider(settings_for(adm, timeout=0.3)), delivery(), adm_channel(adm))
    assert time.monotonic() - started < 3
    assert outcome.status is DeliveryStatus.TIMEOUT
    assert outcome.status_code == 504


def test_vanished_adm_is_a_temporary_failure() -> None:
    with FakeAdm() as fake:
        settings = settings_for(fake)
        channel = adm_channel(fake)
    outcome = send_one(AdmProvider(settings), delivery(), channel)  # fake stopped: refused
    assert outcome.status is DeliveryStatus.TEMPORARY_FAILURE
    assert outcome.status_code == 503
    assert "could not reach ADM" in status_message(outcome)["errorMessage"]
