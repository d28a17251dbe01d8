"""The Baidu Cloud Push adapter: signature and builders, then I/O against the Baidu fake."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fakes import baidu as fake_baidu
from tests.fakes.baidu import FakeBaidu
from tests.providers import (
    channel_config,
    provider_settings,
    push_delivery,
    push_status,
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
from worker.providers.baidu import (
    BAIDU_ERRORS,
    BaiduProvider,
    baidu_sign,
    build_baidu_msg,
    build_baidu_params,
    classify_baidu_response,
    php_urlencode,
)

CHANNEL_ID = "3712345678901234567"


@pytest.fixture
def baidu() -> Iterator[FakeBaidu]:
    yield from serve(FakeBaidu())


def settings_for(fake: FakeBaidu, *, path: str = "", timeout: float = 2.0) -> Settings:
    return provider_settings(baidu_url=fake.base_url + path, provider_timeout_s=timeout)


def baidu_channel(fake: FakeBaidu, *, secret: str | None = None) -> ChannelConfig:
    return channel_config(
        "BAIDU", credentials={"ApiKey": fake.api_key, "SecretKey": secret or fake.secret_key}
    )


def delivery(
    address: str = CHANNEL_ID, notification: PushNotification | None = None
) -> OutgoingMessage:
    return push_delivery("BAIDU", address, notification)


def status_message(outcome: Outcome) -> dict[str, str]:
    return push_status(outcome, "BAIDU")


# --- signature (pure) -----------------------------------------------------------------------


def test_php_urlencode_known_values() -> None:
    assert php_urlencode("a b~*'()!-_.") == "a+b%7E%2A%27%28%29%21-_."
    assert php_urlencode("http://h/p?x=1&y=é") == "http%3A%2F%2Fh%2Fp%3Fx%3D1%26y%3D%C3%A9"


@settings(max_examples=300, database=None)
@given(st.text())
def test_php_urlencode_matches_an_independent_implementation(text: str) -> None:
    assert php_urlencode(text) == fake_baidu.php_urlencode(text)


def test_sign_is_md5_of_the_encoded_method_url_sorted_pairs_and_secret() -> None:
    params = {"timestamp": "1700000000", "apikey": "AK", "msg": '{"a":"b c"}', "sign": "ignored"}
    gathered = (
        "POSThttps://api.tuisong.baidu.com/rest/3.0/push/single_device"
        'apikey=AKmsg={"a":"b c"}timestamp=1700000000SK'
    )
    encoded = (
        "POSThttps%3A%2F%2Fapi.tuisong.baidu.com%2Frest%2F3.0%2Fpush%2Fsingle_device"
        "apikey%3DAKmsg%3D%7B%22a%22%3A%22b+c%22%7Dtimestamp%3D1700000000SK"
    )
    assert php_urlencode(gathered) == encoded
    expected = hashlib.md5(encoded.encode()).hexdigest()
    assert (
        baidu_sign(
            "POST", "https://api.tuisong.baidu.com/rest/3.0/push/single_device", params, "SK"
        )
        == expected
    )


# --- builders (pure) ------------------------------------------------------------------------


def test_notification_msg() -> None:
    notification = PushNotification(
        title="Hello",
        body="World",
        action="URL",
        url="https://example.com",
        data={"k": "v"},
        context={"c": "1"},
    )
    msg_type, msg = build_baidu_msg(notification)
    assert msg_type == "1"
    assert json.loads(msg) == {
        "title": "Hello",
        "description": "World",
        "open_type": 1,
        "url": "https://example.com",
        "custom_content": {
            "c": "1",
            "pinpoint.notification.title": "Hello",
            "pinpoint.notification.body": "World",
            "pinpoint.url": "https://example.com",
            "pinpoint.jsonBody": '{"k":"v"}',
            "pinpoint.notification.silentPush": "0",
        },
    }


def test_silent_push_is_a_message_carrying_the_data_map() -> None:
    msg_type, msg = build_baidu_msg(PushNotification(silent_push=True, data={"k": "v"}))
    assert msg_type == "0"
    assert json.loads(msg) == {
        "pinpoint.openApp": "true",
        "pinpoint.jsonBody": '{"k":"v"}',
        "pinpoint.notification.silentPush": "1",
    }


def test_raw_content_is_verbatim() -> None:
    notification_raw = '{"title": "T", "description": "D"}'
    assert build_baidu_msg(PushNotification(raw_content=notification_raw)) == (
        "1",
        notification_raw,
    )
    message_raw = '{"anything": [1, 2]}'
    assert build_baidu_msg(PushNotification(raw_content=message_raw)) == ("0", message_raw)
    with pytest.raises(PayloadError, match="RawContent"):
        build_baidu_msg(PushNotification(raw_content="plain text"))


def test_params_and_ttl() -> None:
    params = build_baidu_params(
        PushNotification(body="b", options={"TimeToLive": "60"}), CHANNEL_ID, "AK", 1700000000
    )
    assert {k: v for k, v in params.items() if k != "msg"} == {
        "apikey": "AK",
        "timestamp": "1700000000",
        "device_type": "3",
        "channel_id": CHANNEL_ID,
        "msg_type": "1",
        "msg_expires": "60",
    }
    capped = build_baidu_params(
        PushNotification(options={"TimeToLive": 10**7}), CHANNEL_ID, "AK", 1
    )
    assert capped["msg_expires"] == "604800"
    assert "msg_expires" not in build_baidu_params(PushNotification(), CHANNEL_ID, "AK", 1)
    with pytest.raises(PayloadError, match="TimeToLive"):
        build_baidu_params(PushNotification(options={"TimeToLive": "x"}), CHANNEL_ID, "AK", 1)


# --- classification (pure) ------------------------------------------------------------------


def baidu_error(code: int, message: str) -> str:
    return json.dumps({"request_id": 1, "error_code": code, "error_msg": message})


@pytest.mark.parametrize(
    ("http", "code", "message", "status", "deactivate"),
    [
        (500, 30600, "Internal Server Error", DeliveryStatus.TEMPORARY_FAILURE, False),
        (405, 30601, "Method Not Allowed", DeliveryStatus.PERMANENT_FAILURE, False),
        (400, 30602, "Request Params Not Valid, msg_type", DeliveryStatus.PERMANENT_FAILURE, False),
        (
            400,
            30602,
            "Request Params Not Valid, channel_id invalid",
            DeliveryStatus.PERMANENT_FAILURE,
            True,
        ),
        (401, 30603, "Authentication Failed", DeliveryStatus.PERMANENT_FAILURE, False),
        (402, 30604, "Quota Use Up Payment Required", DeliveryStatus.PERMANENT_FAILURE, False),
        (404, 30605, "Data Required Not Found", DeliveryStatus.PERMANENT_FAILURE, False),
        (
            404,
            30605,
            "Data Required Not Found, channel id not exist",
            DeliveryStatus.PERMANENT_FAILURE,
            True,
        ),
        (400, 30606, "Request Time Expires Timeout", DeliveryStatus.PERMANENT_FAILURE, False),
        (400, 30607, "Channel Token Timeout", DeliveryStatus.PERMANENT_FAILURE, False),
        (404, 30608, "Bind Relation Not Found", DeliveryStatus.PERMANENT_FAILURE, True),
        (503, 30699, "Requests Are Too Frequent", DeliveryStatus.THROTTLED, False),
        (503, 39999, "unknown", DeliveryStatus.TEMPORARY_FAILURE, False),
        (429, 39999, "unknown", DeliveryStatus.THROTTLED, False),
        (400, 39999, "unknown", DeliveryStatus.PERMANENT_FAILURE, False),
    ],
)
def test_classification_table(
    http: int, code: int, message: str, status: DeliveryStatus, deactivate: bool
) -> None:
    outcome = classify_baidu_response(http, baidu_error(code, message), {"retry-after": "5"})
    assert (outcome.status, outcome.status_code, outcome.deactivate_endpoint) == (
        status,
        http,
        deactivate,
    )
    assert outcome.retry_after == (5.0 if status.retryable else None)
    assert status_message(outcome)["pushProviderError"] == str(code)
    assert message in status_message(outcome)["errorMessage"]


def test_non_json_gateway_error_is_temporary() -> None:
    outcome = classify_baidu_response(502, "<html>Bad Gateway</html>", {})
    assert outcome.status is DeliveryStatus.TEMPORARY_FAILURE


def test_table_covers_the_codes_herald_was_asked_about() -> None:
    assert {30600, 30601, 30602, 30603, 30604, 30605, 30606, 30607, 30608, 30699} <= set(
        BAIDU_ERRORS
    )


# --- against the fake -----------------------------------------------------------------------


def test_success_sends_a_signed_form(baidu: FakeBaidu) -> None:
    notification = PushNotification(title="Hello", body="World ~ *", options={"TimeToLive": 120})
    before = int(time.time())
    outcome = send_one(
        BaiduProvider(settings_for(baidu)), delivery(CHANNEL_ID, notification), baidu_channel(baidu)
    )

    assert outcome.status is DeliveryStatus.SUCCESSFUL
    assert outcome.status_code == 200
    assert outcome.message_id == "7000000000000000000"
    [push] = baidu.pushes()
    assert push.path == "/rest/3.0/push/single_device"
    assert push.headers["content-type"] == "application/x-www-form-urlencoded;charset=utf-8"
    assert push.headers["user-agent"].startswith("BCCS_SDK/3.0 (")
    form = push.form()
    assert before <= int(form.pop("timestamp")) <= before + 5
    sign = form.pop("sign")
    assert len(sign) == 32
    assert json.loads(form.pop("msg")) == {
        "title": "Hello",
        "description": "World ~ *",
        "custom_content": {
            "pinpoint.notification.title": "Hello",
            "pinpoint.notification.body": "World ~ *",
            "pinpoint.openApp": "true",
            "pinpoint.notification.silentPush": "0",
        },
    }
    assert form == {
        "apikey": baidu.api_key,
        "device_type": "3",
        "channel_id": CHANNEL_ID,
        "msg_type": "1",
        "msg_expires": "120",
    }


def test_signature_covers_the_configured_url_including_a_path(baidu: FakeBaidu) -> None:
    outcome = send_one(
        BaiduProvider(settings_for(baidu, path="/gateway/baidu")), delivery(), baidu_channel(baidu)
    )
    assert outcome.status is DeliveryStatus.SUCCESSFUL
    assert baidu.pushes()[0].path == "/gateway/baidu/rest/3.0/push/single_device"


def test_wrong_secret_fails_the_signature(baidu: FakeBaidu) -> None:
    outcome = send_one(
        BaiduProvider(settings_for(baidu)),
        delivery(),
        baidu_channel(baidu, secret="not-the-secret"),
    )
    assert outcome.status is DeliveryStatus.PERMANENT_FAILURE
    assert outcome.status_code == 401
    assert not outcome.deactivate_endpoint
    assert status_message(outcome)["pushProviderError"] == "30603"


def test_silent_push_is_sent_as_a_message(baidu: FakeBaidu) -> None:
    notification = PushNotification(silent_push=True, data={"sync": "now"})
    outcome = send_one(
        BaiduProvider(settings_for(baidu)), delivery(CHANNEL_ID, notification), baidu_channel(baidu)
    )
    assert outcome.status is DeliveryStatus.SUCCESSFUL
    form = baidu.pushes()[0].form()
    assert form["msg_type"] == "0"
    assert json.loads(json.loads(form["msg"])["pinpoint.jsonBody"]) == {"sync": "now"}


@pytest.mark.parametrize(
    ("code", "kwargs", "status", "http", "deactivate"),
    [
        (30600, {}, DeliveryStatus.TEMPORARY_FAILURE, 500, False),
        (
            30602,
            {"error_msg": "Request Params Not Valid, channel_id invalid"},
            DeliveryStatus.PERMANENT_FAILURE,
            400,
            True,
        ),
        (30604, {}, DeliveryStatus.PERMANENT_FAILURE, 402, False),
        (30607, {}, DeliveryStatus.PERMANENT_FAILURE, 400, False),
        (30608, {}, DeliveryStatus.PERMANENT_FAILURE, 404, True),
        (30699, {}, DeliveryStatus.THROTTLED, 503, False),
    ],
)
def test_baidu_errors_map_to_outcomes(
    baidu: FakeBaidu,
    code: int,
    kwargs: dict[str, Any],
    status: DeliveryStatus,
    http: int,
    deactivate: bool,
) -> None:
    baidu.fail(CHANNEL_ID, code, **kwargs)
    outcome = send_one(BaiduProvider(settings_for(baidu)), delivery(), baidu_channel(baidu))
    assert outcome.status is status
    assert outcome.status_code == http
    assert outcome.deactivate_endpoint is deactivate
    assert status_message(outcome)["pushProviderError"] == str(code)
    assert len(baidu.pushes()) == 1


def test_missing_credentials_fail_without_a_request(baidu: FakeBaidu) -> None:
    channel = channel_config("BAIDU", credentials={"ApiKey": "x"})
    outcome = send_one(BaiduProvider(settings_for(baidu)), delivery(), channel)
    assert outcome.status is DeliveryStatus.PERMANENT_FAILURE
    assert "SecretKey" in status_message(outcome)["errorMessage"]
    assert baidu.requests == []


def test_send_that_hangs_is_a_timeout(baidu: FakeBaidu) -> None:
    baidu.hang(CHANNEL_ID, 5)
    started = time.monotonic()
    outcome = send_one(
        BaiduProvider(settings_for(baidu, timeout=0.3)), delivery(), baidu_channel(baidu)
    )
    assert time.monotonic() - started < 3
    assert outcome.status is DeliveryStatus.TIMEOUT
    assert outcome.status_code == 504


def test_vanished_baidu_is_a_temporary_failure() -> None:
    with FakeBaidu() as fake:
        settings = settings_for(fake)
        channel = baidu_channel(fake)
    outcome = send_one(BaiduProvider(settings), delivery(), channel)
    assert outcome.status is DeliveryStatus.TEMPORARY_FAILURE
    assert outcome.status_code == 503
