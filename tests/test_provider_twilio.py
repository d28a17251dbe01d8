"""Twilio SMS and voice adapters against the fake Twilio REST API."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.http import unused_port
from tests.fakes.tls import make_tls_files
from tests.fakes.twilio import FakeTwilio
from tests.providers import (
    SENDER,
    channel_config,
    provider_settings,
    send_all,
    send_one,
    serve,
    sms_delivery,
    voice_delivery,
)
from worker.core.config import ConfigError, Settings
from worker.core.vocabulary import (
    ChannelConfig,
    DeliveryStatus,
    Outcome,
    OutgoingMessage,
    VoiceContent,
)
from worker.providers.twilio import (
    TwilioSmsProvider,
    TwilioVoiceProvider,
    build_say_twiml,
    error_outcome,
    twiml_voice,
)

TO = "+15557654321"
FROM = SENDER
SMS_CHANNEL = channel_config("SMS")
VOICE_CHANNEL = channel_config("VOICE")


@pytest.fixture
def fake() -> Iterator[FakeTwilio]:
    yield from serve(FakeTwilio())


def settings_for(fake: FakeTwilio, **overrides: Any) -> Settings:
    account = {
        "twilio_url": fake.url,
        "twilio_account_sid": fake.account_sid,
        "twilio_auth_token": fake.auth_token,
    }
    return provider_settings(**(account | overrides))


def sms(body: str = "hello", to: str = TO, **content: Any) -> OutgoingMessage:
    return sms_delivery(to, body, **content)


def voice(body: str = "hello", to: str = TO, **content: Any) -> OutgoingMessage:
    return voice_delivery(to, body, **content)


def send_sms(
    settings: Settings, *deliveries: OutgoingMessage, channel: ChannelConfig = SMS_CHANNEL
) -> list[Outcome]:
    return send_all(TwilioSmsProvider(settings), deliveries, channel)


def send_voice(settings: Settings, delivery: OutgoingMessage) -> Outcome:
    return send_one(TwilioVoiceProvider(settings), delivery, VOICE_CHANNEL)


# --- SMS -----------------------------------------------------------------------------------


def test_sms_creates_a_message_with_basic_auth(fake: FakeTwilio) -> None:
    [outcome] = send_sms(
        settings_for(fake), sms("Hi {{Name}} - ünïcode ✓", media_url="https://x/y.png")
    )

    assert outcome.status is DeliveryStatus.SUCCESSFUL
    assert outcome.status_code == 201
    assert outcome.message_id is not None
    assert outcome.message_id.startswith("SM") and len(outcome.message_id) == 34
    [request] = fake.requests
    assert request.method == "POST"
    assert request.path == f"/2010-04-01/Accounts/{fake.account_sid}/Messages.json"
    assert request.auth == (fake.account_sid, fake.auth_token)
    assert request.headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert request.field("To") == TO
    assert request.field("From") == FROM
    assert request.field("Body") == "Hi {{Name}} - ünïcode ✓"
    assert request.fields("MediaUrl") == ["https://x/y.png"]


def test_sms_without_media_sends_no_media_url(fake: FakeTwilio) -> None:
    send_sms(settings_for(fake), sms())
    assert fake.requests[0].fields("MediaUrl") == []


@pytest.mark.parametrize(
    ("content", "channel_settings", "default", "expected"),
    [
        ({"origination_number": "+15550000001", "sender_id": "Herald"}, {"ShortCode": "12345"},
         "+15550000009", "+15550000001"),
        ({"origination_number": None, "sender_id": "Herald"}, {"ShortCode": "12345"},
         "+15550000009", "Herald"),
        ({"origination_number": None}, {"ShortCode": "12345", "SenderId": "AppName"},
         "+15550000009", "12345"),
        ({"origination_number": None}, {"SenderId": "AppName"}, "+15550000009", "AppName"),
        ({"origination_number": None}, {}, "+15550000009", "+15550000009"),
    ],
    ids=["origination-number", "message-sender-id", "channel-short-code",
         "channel-sender-id", "default"],
)  # fmt: skip
def test_sender_fallback_order(
    fake: FakeTwilio,
    content: dict[str, Any],
    channel_settings: dict[str, Any],
    default: str,
    expected: str,
) -> None:
    channel = channel_config("SMS", settings=channel_settings)
    [outcome] = send_sms(
        settings_for(fake, default_origination_number=default), sms(**content), channel=channel
    )
    assert outcome.status is DeliveryStatus.SUCCESSFUL
    assert fake.requests[0].field("From") == expected


def test_no_sender_at_all_is_refused_without_a_request(fake: FakeTwilio) -> None:
    [outcome] = send_sms(settings_for(fake), sms(origination_number=None))
    assert outcome.status is DeliveryStatus.PERMANENT_FAILURE
    assert outcome.status_code == 400
    assert "HERALD_DEFAULT_ORIGINATION_NUMBER" in outcome.status_message
    assert fake.requests == []


@pytest.mark.parametrize(
    "address", ["5557654321", "+05557654321", "+1 555 765 4321", "+1234567890123456", "+1",
                "tel:+15557654321", "+1555765432a", ""],
)  # fmt: skip
def test_non_e164_address_is_refused_without_a_request(fake: FakeTwilio, address: str) -> None:
    [outcome] = send_sms(settings_for(fake), sms(to=address))
    assert outcome.status is DeliveryStatus.PERMANENT_FAILURE
    assert outcome.status_code == 400
    assert "E.164" in outcome.status_message
    assert fake.requests == []


@pytest.mark.parametrize(
    ("http", "code", "retry_after", "status", "expected_retry_after"),
    [
        (400, 21211, None, DeliveryStatus.PERMANENT_FAILURE, None),
        (400, 21614, None, DeliveryStatus.PERMANENT_FAILURE, None),
        (400, 21612, None, DeliveryStatus.PERMANENT_FAILURE, None),
        (400, 21408, None, DeliveryStatus.PERMANENT_FAILURE, None),
        (400, 21610, None, DeliveryStatus.OPT_OUT, None),
        (429, 20429, 7, DeliveryStatus.THROTTLED, 7.0),
        (429, 20429, None, DeliveryStatus.THROTTLED, None),
        (500, 20500, None, DeliveryStatus.TEMPORARY_FAILURE, None),
        (503, 20503, 3, DeliveryStatus.TEMPORARY_FAILURE, None),
        (404, 20404, None, DeliveryStatus.PERMANENT_FAILURE, None),
    ],
)
def test_twilio_errors_map_to_outcomes(
    fake: FakeTwilio,
    http: int,
    code: int,
    retry_after: float | None,
    status: DeliveryStatus,
    expected_retry_after: float | None,
) -> None:
    fake.fail(http, code, retry_after=retry_after)
    [outcome] = send_sms(settings_for(fake), sms())
    assert outcome.status is status
    assert outcome.status_code == http
    assert outcome.retry_after == expected_retry_after
    assert f"Twilio {http}" in outcome.status_message
    assert str(code) in outcome.status_message
    assert outcome.message_id is None
    assert len(fake.requests) == 1


def test_error_script_for_one_number_leaves_others_alone(fake: FakeTwilio) -> None:
    fake.fail(400, 21610, to="+15550000002")
    outcomes = send_sms(settings_for(fake), sms(to="+15550000001"), sms(to="+15550000002"))
    assert [o.status for o in outcomes] == [DeliveryStatus.SUCCESSFUL, DeliveryStatus.OPT_OUT]


def test_throttled_once_then_accepted(fake: FakeTwilio) -> None:
    fake.fail(429, 20429, retry_after=1, times=1)
    outcomes = send_sms(settings_for(fake), sms(), sms())
    assert [o.status for o in outcomes] == [DeliveryStatus.THROTTLED, DeliveryStatus.SUCCESSFUL]


def test_wrong_credentials_name_the_settings(fake: FakeTwilio) -> None:
    [outcome] = send_sms(settings_for(fake, twilio_auth_token="wrong"), sms())
    assert outcome.status is DeliveryStatus.PERMANENT_FAILURE
    assert outcome.status_code == 401
    assert "20003" in outcome.status_message
    assert "HERALD_TWILIO_AUTH_TOKEN" in outcome.status_message
    assert fake.requests[0].auth == (fake.account_sid, "wrong")


def test_no_answer_in_time_is_timeout(fake: FakeTwilio) -> None:
    fake.hang()
    started = time.monotonic()
    [outcome] = send_sms(settings_for(fake, provider_timeout_s=0.3), sms())
    elapsed = time.monotonic() - started
    assert outcome.status is DeliveryStatus.TIMEOUT
    assert outcome.status_code == 504
    assert 0.3 <= elapsed < 1.5


def test_connection_refused_is_temporary() -> None:
    settings = provider_settings(
        twilio_url=f"http://127.0.0.1:{unused_port()}",
        twilio_account_sid="AC" + "0" * 32,
        twilio_auth_token="t",
    )
    [outcome] = send_sms(settings, sms())
    assert outcome.status is DeliveryStatus.TEMPORARY_FAILURE
    assert outcome.status_code == 503
    assert "could not reach Twilio" in outcome.status_message


def test_https_trusts_the_ca_bundle_and_nothing_else() -> None:
    tls = make_tls_files()
    with FakeTwilio(tls=tls) as fake:
        assert fake.url.startswith("https://")
        [trusted] = send_sms(settings_for(fake, ca_bundle=tls.ca_path), sms())
        [untrusted] = send_sms(settings_for(fake), sms())
        assert trusted.status is DeliveryStatus.SUCCESSFUL
        assert untrusted.status is DeliveryStatus.TEMPORARY_FAILURE
        assert "Certificate" in untrusted.status_message
        assert len(fake.messages) == 1


def test_a_closed_provider_can_send_again_on_another_event_loop(fake: FakeTwilio) -> None:
    provider = TwilioSmsProvider(settings_for(fake))
    first = send_one(provider, sms(), SMS_CHANNEL)
    second = send_one(provider, sms(), SMS_CHANNEL)
    assert first.status is second.status is DeliveryStatus.SUCCESSFUL
    assert len(fake.messages) == 2


def test_missing_credentials_fail_at_start() -> None:
    with pytest.raises(ConfigError, match="HERALD_TWILIO_ACCOUNT_SID"):
        TwilioSmsProvider(Settings(twilio_account_sid=None, twilio_auth_token=None))


def test_a_proxy_error_page_is_still_classified(fake: FakeTwilio) -> None:
    fake.reply_raw(502, "<html>Bad Gateway</html>")
    [outcome] = send_sms(settings_for(fake), sms())
    assert outcome.status is DeliveryStatus.TEMPORARY_FAILURE
    assert outcome.status_code == 502
    assert "Bad Gateway" in outcome.status_message


def test_a_success_that_is_not_json_is_an_unknown_failure(fake: FakeTwilio) -> None:
    fake.reply_raw(201, "<html>Created</html>")
    [outcome] = send_sms(settings_for(fake), sms())
    assert outcome.status is DeliveryStatus.UNKNOWN_FAILURE
    assert not outcome.status.retryable


def test_retry_after_as_http_date_is_read_like_every_adapter_reads_it() -> None:
    # One Retry-After reading for every adapter (issue 15): an HTTP-date counts, and one
    # already past means "now".
    outcome = error_outcome(429, '{"code": 20429, "message": "Too Many Requests"}',
                            "Wed, 21 Oct 2015 07:28:00 GMT")  # fmt: skip
    assert outcome.status is DeliveryStatus.THROTTLED
    assert outcome.retry_after == 0.0


# --- voice ---------------------------------------------------------------------------------

EVIL = "Your code is 1234 </Say><Play>http://evil</Play><Say> & \"more\" 'here'"


def test_voice_call_says_the_body_in_one_escaped_say(fake: FakeTwilio) -> None:
    outcome = send_voice(settings_for(fake), voice(EVIL, language_code="en-GB", voice_id="Amy"))

    assert outcome.status is DeliveryStatus.SUCCESSFUL
    assert outcome.status_code == 201
    assert outcome.message_id is not None and outcome.message_id.startswith("CA")
    assert len(outcome.message_id) == 34
    [call] = fake.calls
    assert call.path == f"/2010-04-01/Accounts/{fake.account_sid}/Calls.json"
    assert call.auth == (fake.account_sid, fake.auth_token)
    assert call.field("To") == TO
    assert call.field("From") == FROM
    twiml = call.field("Twiml")
    assert twiml is not None
    assert "<Play>" not in twiml
    root = ET.fromstring(twiml)
    assert root.tag == "Response"
    assert [child.tag for child in root] == ["Say"]
    say = root[0]
    assert list(say) == []
    assert say.text == EVIL
    assert say.attrib == {"language": "en-GB", "voice": "Polly.Amy"}


def test_voice_falls_back_to_the_default_caller(fake: FakeTwilio) -> None:
    outcome = send_voice(
        settings_for(fake, default_origination_number="+15550000009"),
        voice(origination_number=None),
    )
    assert outcome.status is DeliveryStatus.SUCCESSFUL
    assert fake.calls[0].field("From") == "+15550000009"


def test_voice_without_a_caller_is_refused_without_a_request(fake: FakeTwilio) -> None:
    outcome = send_voice(settings_for(fake), voice(origination_number=None))
    assert outcome.status is DeliveryStatus.PERMANENT_FAILURE
    assert outcome.status_code == 400
    assert fake.requests == []


def test_voice_to_a_non_e164_address_is_refused(fake: FakeTwilio) -> None:
    outcome = send_voice(settings_for(fake), voice(to="07700 900123"))
    assert outcome.status is DeliveryStatus.PERMANENT_FAILURE
    assert fake.requests == []


@pytest.mark.parametrize(
    ("http", "code", "status"),
    [
        (400, 21216, DeliveryStatus.PERMANENT_FAILURE),
        (400, 21215, DeliveryStatus.PERMANENT_FAILURE),
        (429, 20429, DeliveryStatus.THROTTLED),
        (503, 20503, DeliveryStatus.TEMPORARY_FAILURE),
    ],
)
def test_voice_errors_map_to_outcomes(
    fake: FakeTwilio, http: int, code: int, status: DeliveryStatus
) -> None:
    fake.fail(http, code, to=TO)
    outcome = send_voice(settings_for(fake), voice())
    assert (outcome.status, outcome.status_code) == (status, http)


def test_voice_timeout(fake: FakeTwilio) -> None:
    fake.hang(to=TO)
    outcome = send_voice(settings_for(fake, provider_timeout_s=0.3), voice())
    assert outcome.status is DeliveryStatus.TIMEOUT


def test_sms_provider_refuses_voice_content(fake: FakeTwilio) -> None:
    [outcome] = send_sms(settings_for(fake), voice())
    assert outcome.status is DeliveryStatus.PERMANENT_FAILURE
    assert fake.requests == []


# --- TwiML builder (pure) ------------------------------------------------------------------


def test_twiml_escapes_body_and_attributes() -> None:
    content = VoiceContent(
        body="a < b && c > d </Say>",
        language_code='en-US" voice="man',
        voice_id='Joanna"><Play>x</Play>',
    )
    twiml = build_say_twiml(content)
    root = ET.fromstring(twiml)
    [say] = list(root)
    assert say.text == content.body
    assert say.attrib["language"] == 'en-US" voice="man'
    assert say.attrib["voice"] == 'Polly.Joanna"><Play>x</Play>'
    assert root.find(".//Play") is None


def test_twiml_without_language_or_voice_has_no_attributes() -> None:
    twiml = build_say_twiml(VoiceContent(body="hello"))
    assert twiml == '<?xml version="1.0" encoding="UTF-8"?><Response><Say>hello</Say></Response>'


def test_twiml_drops_characters_xml_cannot_carry() -> None:
    twiml = build_say_twiml(VoiceContent(body="one\x00two\x07three\nfour"))
    assert ET.fromstring(twiml)[0].text == "onetwothree\nfour"


@pytest.mark.parametrize(
    ("voice_id", "expected"),
    [("Joanna", "Polly.Joanna"), ("Polly.Matthew-Neural", "Polly.Matthew-Neural"),
     ("Google.en-US-Standard-C", "Google.en-US-Standard-C"), ("alice", "alice"),
     (None, None), ("", None)],
)  # fmt: skip
def test_voice_id_mapping(voice_id: str | None, expected: str | None) -> None:
    assert twiml_voice(voice_id) == expected
