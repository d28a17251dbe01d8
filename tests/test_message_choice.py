"""Which message an endpoint gets, and which endpoints count as the same recipient: the
tables of DESIGN.md §4 as plain function calls (no server, no database).

A request may carry a message per channel family and two defaults; for each endpoint the
channel's own message wins over the default, member by member for push, and the endpoint's
overrides (BodyOverride, TitleOverride, RawContent) win over both. A channel with no message
that applies to it is a permanent failure decided at intake (``has_message``)."""

from __future__ import annotations

from typing import Any

import pytest

from worker import wire
from worker.core.vocabulary import (
    ChannelConfig,
    EmailContent,
    PushNotification,
    SmsContent,
    VoiceContent,
)
from worker.delivery.rendering import Recipient, RenderError, dedup_key, has_message, render

PUSH = ["APNS", "APNS_SANDBOX", "APNS_VOIP", "APNS_VOIP_SANDBOX", "GCM", "ADM", "BAIDU"]
DIRECT = ["EMAIL", "SMS", "VOICE"]
ADDRESSES = {"EMAIL": "ada@example.com", "SMS": "+15555550100", "VOICE": "+15555550100"}

EVERY_MESSAGE: dict[str, Any] = {
    "DefaultPushNotificationMessage": {"Title": "default push title", "Body": "default push"},
    "DefaultMessage": {"Body": "default"},
    "APNSMessage": {"Title": "apns title", "Body": "apns"},
    "GCMMessage": {"Title": "gcm title", "Body": "gcm"},
    "ADMMessage": {"Title": "adm title", "Body": "adm"},
    "BaiduMessage": {"Title": "baidu title", "Body": "baidu"},
    "EmailMessage": {"Body": "email"},
    "SMSMessage": {"Body": "sms"},
    "VoiceMessage": {"Body": "voice"},
}


def _config(members: dict[str, Any]) -> wire.DirectMessageConfiguration:
    return wire.DirectMessageConfiguration.model_validate(members)


def _render(config: wire.DirectMessageConfiguration, channel_type: str,
            overrides: dict[str, Any] | None = None) -> Any:
    channel = ChannelConfig(app_id="app", channel_type=channel_type, enabled=True,
                            settings={"FromAddress": "herald@example.com"})
    recipient = Recipient(channel_type, ADDRESSES.get(channel_type, "device-token"))
    return render(config, recipient, channel,
                  overrides=wire.EndpointSendConfiguration.model_validate(overrides or {}))


def _body(content: Any) -> str | None:
    if isinstance(content, EmailContent):
        return content.text
    assert isinstance(content, PushNotification | SmsContent | VoiceContent)
    return content.body


def _own_message(channel_type: str) -> str:
    return {"GCM": "GCMMessage", "ADM": "ADMMessage", "BAIDU": "BaiduMessage"}.get(
        channel_type, "APNSMessage")


# --- the channel's own message over the default -----------------------------------------


@pytest.mark.parametrize(("channel_type", "body"), [
    ("APNS", "apns"),
    ("APNS_SANDBOX", "apns"),
    ("APNS_VOIP", "apns"),
    ("APNS_VOIP_SANDBOX", "apns"),
    ("GCM", "gcm"),
    ("ADM", "adm"),
    ("BAIDU", "baidu"),
    ("EMAIL", "email"),
    ("SMS", "sms"),
    ("VOICE", "voice"),
])
def test_the_channels_own_message_wins_over_the_default(channel_type: str, body: str) -> None:
    config = _config(EVERY_MESSAGE)
    assert has_message(config, channel_type)
    assert _body(_render(config, channel_type)) == body


@pytest.mark.parametrize(("channel_type", "body"), [
    *[(channel_type, "default push") for channel_type in PUSH],
    *[(channel_type, "default") for channel_type in DIRECT],
])
def test_without_its_own_message_a_channel_takes_its_default(channel_type: str,
                                                             body: str) -> None:
    config = _config({member: EVERY_MESSAGE[member]
                      for member in ("DefaultPushNotificationMessage", "DefaultMessage")})
    assert has_message(config, channel_type)
    assert _body(_render(config, channel_type)) == body


@pytest.mark.parametrize("channel_type", PUSH)
def test_push_members_missing_from_the_channels_message_come_from_the_default(
        channel_type: str) -> None:
    config = _config({
        "DefaultPushNotificationMessage": {"Title": "default title", "Body": "default body",
                                           "Url": "https://example.com/default"},
        _own_message(channel_type): {"Body": "own body"},
    })
    content = _render(config, channel_type)
    assert (content.title, content.body, content.url) == (
        "default title", "own body", "https://example.com/default")


# --- overrides win over both --------------------------------------------------------------


@pytest.mark.parametrize("channel_type", PUSH + DIRECT)
def test_body_override_wins_over_every_message(channel_type: str) -> None:
    content = _render(_config(EVERY_MESSAGE), channel_type,
                      {"BodyOverride": "overridden {{User.UserId}}"})
    assert _body(content) == "overridden "  # substituted like any body


@pytest.mark.parametrize("channel_type", PUSH)
def test_title_override_wins_for_push(channel_type: str) -> None:
    content = _render(_config(EVERY_MESSAGE), channel_type, {"TitleOverride": "new title"})
    assert (content.title, content.body) == ("new title", _body(_render(
        _config(EVERY_MESSAGE), channel_type)))


def test_title_override_is_the_email_subject() -> None:
    config = _config({"EmailMessage": {"FromAddress": "a@example.com", "SimpleEmail": {
        "Subject": {"Data": "subject"}, "TextPart": {"Data": "text"}}}})
    assert _render(config, "EMAIL").subject == "subject"
    assert _render(config, "EMAIL", {"TitleOverride": "new subject"}).subject == "new subject"


@pytest.mark.parametrize("channel_type", PUSH)
def test_raw_content_override_wins_for_push(channel_type: str) -> None:
    # DefaultPushNotificationMessage has no RawContent (as in Pinpoint): the channel's own has.
    member = _own_message(channel_type)
    config = _config({**EVERY_MESSAGE, member: {"Body": "own", "RawContent": '{"from": "own"}'}})
    assert _render(config, channel_type).raw_content == '{"from": "own"}'
    content = _render(config, channel_type, {"RawContent": '{"from": "override"}'})
    assert content.raw_content == '{"from": "override"}'


@pytest.mark.parametrize("channel_type", PUSH + DIRECT)
@pytest.mark.parametrize("override", [{"BodyOverride": "b"}, {"RawContent": "{}"}])
def test_an_override_alone_is_a_message(channel_type: str, override: dict[str, str]) -> None:
    overrides = wire.EndpointSendConfiguration.model_validate(override)
    assert has_message(_config({}), channel_type, overrides)


# --- a channel without a message that applies to it -------------------------------------


@pytest.mark.parametrize(("members", "channel_type"), [
    # Another family's message or default never applies.
    (["DefaultMessage"], "APNS"),
    (["DefaultMessage"], "GCM"),
    (["DefaultMessage", "SMSMessage", "EmailMessage"], "BAIDU"),
    (["DefaultPushNotificationMessage"], "EMAIL"),
    (["DefaultPushNotificationMessage"], "SMS"),
    (["DefaultPushNotificationMessage"], "VOICE"),
    # Another channel's own message never applies.
    (["GCMMessage", "ADMMessage", "BaiduMessage"], "APNS"),
    (["GCMMessage", "ADMMessage", "BaiduMessage"], "APNS_VOIP_SANDBOX"),
    (["APNSMessage", "ADMMessage", "BaiduMessage"], "GCM"),
    (["APNSMessage", "GCMMessage", "BaiduMessage"], "ADM"),
    (["APNSMessage", "GCMMessage", "ADMMessage"], "BAIDU"),
    (["SMSMessage", "VoiceMessage"], "EMAIL"),
    (["EmailMessage", "VoiceMessage"], "SMS"),
    (["EmailMessage", "SMSMessage"], "VOICE"),
    ([], "SMS"),
])
def test_a_channel_without_an_applicable_message_has_none(members: list[str],
                                                          channel_type: str) -> None:
    config = _config({member: EVERY_MESSAGE[member] for member in members})
    assert not has_message(config, channel_type)
    assert not has_message(config, channel_type, wire.EndpointSendConfiguration(
        substitutions={"a": ["b"]}, context={"k": "v"}))  # overrides with no content


@pytest.mark.parametrize("channel_type", ["CUSTOM", "IN_APP", "PUSH"])
def test_an_unsupported_channel_never_has_a_message(channel_type: str) -> None:
    overrides = wire.EndpointSendConfiguration(body_override="b")
    assert not has_message(_config(EVERY_MESSAGE), channel_type)
    assert not has_message(_config(EVERY_MESSAGE), channel_type, overrides)
    with pytest.raises(RenderError, match=f"{channel_type} is not supported"):
        _render(_config(EVERY_MESSAGE), channel_type)


# --- duplicate keys -------------------------------------------------------------------------


@pytest.mark.parametrize(("channel_type", "first", "second"), [
    ("EMAIL", "Ada@Example.COM", "ada@example.com"),
    ("EMAIL", " ada@example.com ", "ADA@EXAMPLE.COM"),
    ("SMS", "+1 555 555 0100", "+15555550100"),
    ("SMS", "+1 (555) 555-0100", "+1.555.555.0100"),
    ("SMS", "0015555550100", "+15555550100"),
    ("VOICE", "+44 20 7946 0958", "+442079460958"),
    ("VOICE", "0044 (20) 7946-0958", "+44 20 7946 0958"),
])
def test_the_same_recipient_however_written(channel_type: str, first: str,
                                            second: str) -> None:
    assert dedup_key(channel_type, first) == dedup_key(channel_type, second)


@pytest.mark.parametrize(("channel_type", "first", "second"), [
    # Device tokens are compared exactly: case and spacing are part of the token.
    ("APNS", "ABCDEF0123", "abcdef0123"),
    ("APNS_SANDBOX", "abcdef0123", "abcdef0123 "),
    ("GCM", "fcm:Token-1", "fcm:token-1"),
    ("ADM", "amzn1.adm-registration.v3.X", "amzn1.adm-registration.v3.x"),
    ("BAIDU", "channel 1", "channel1"),
    # Different recipients stay different.
    ("EMAIL", "ada@example.com", "ada@example.org"),
    ("SMS", "+15555550100", "+15555550101"),
    # The same address on two channels is two recipients.
    ("SMS", "+15555550100", None),
])
def test_different_recipients_stay_different(channel_type: str, first: str,
                                              second: str | None) -> None:
    other = ("VOICE", first) if second is None else (channel_type, second)
    assert dedup_key(channel_type, first) != dedup_key(*other)


def test_device_tokens_are_kept_as_written() -> None:
    assert dedup_key("APNS", "AbC") == ("APNS", "AbC")
    assert dedup_key("SMS", "0044 20 7946 0958") == ("SMS", "+442079460958")
    assert dedup_key("EMAIL", " Ada@Example.com ") == ("EMAIL", "ada@example.com")
