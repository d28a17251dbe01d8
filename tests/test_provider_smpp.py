"""The SMPP adapter against the fake SMSC, and its pure splitter."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.http import unused_port
from tests.fakes.smsc import FakeSmsc, gsm7_decode
from tests.providers import channel_config, drive, provider_settings, send_all, sms_delivery
from worker.core.config import ConfigError, Settings
from worker.core.vocabulary import DeliveryStatus, Outcome, OutgoingMessage
from worker.providers.smpp import (
    DATA_CODING_GSM7,
    DATA_CODING_UCS2,
    MessageTooLong,
    SmppSmsProvider,
    concatenation_reference,
    source_address,
    split_message,
)

TO = "+447700900000"
TO_DIGITS = TO[1:]
CHANNEL = channel_config("SMS")


@pytest.fixture
def smsc() -> Iterator[FakeSmsc]:
    with FakeSmsc() as server:
        yield server


def settings_for(url: str, **overrides: Any) -> Settings:
    return provider_settings(sms_transport="smpp", smpp_url=url, **overrides)


def sms(body: str = "hello", to: str = TO, **content: Any) -> OutgoingMessage:
    return sms_delivery(to, body, **content)


def send(
    settings: Settings, *deliveries: OutgoingMessage, concurrently: bool = False
) -> list[Outcome]:
    return send_all(SmppSmsProvider(settings), deliveries, CHANNEL, concurrent=concurrently)


# --- delivery ------------------------------------------------------------------------------


def test_short_gsm_message(smsc: FakeSmsc) -> None:
    [outcome] = send(settings_for(smsc.url), sms("Hello @ £5 {ok} €"))

    assert outcome.status is DeliveryStatus.SUCCESSFUL
    assert outcome.status_code == 200
    [submit] = smsc.submits
    assert outcome.message_id == submit.message_id
    assert submit.system_id == "herald"
    assert (submit.source_addr_ton, submit.source_addr_npi, submit.source_addr) == (
        1,
        1,
        "15550001111",
    )
    assert (submit.dest_addr_ton, submit.dest_addr_npi, submit.destination_addr) == (
        1,
        1,
        TO_DIGITS,
    )
    assert submit.data_coding == DATA_CODING_GSM7
    assert submit.esm_class == 0
    assert submit.udh is None
    assert submit.registered_delivery == 0
    assert submit.text() == "Hello @ £5 {ok} €"
    assert [b.command for b in smsc.binds] == ["bind_transmitter"]
    assert smsc.binds[0].interface_version == 0x34


def test_long_gsm_message_is_concatenated(smsc: FakeSmsc) -> None:
    body = ("The quick brown fox jumps over the lazy dog [€] " * 9).strip()
    delivery = sms(body)
    [outcome] = send(settings_for(smsc.url), delivery)

    assert outcome.status is DeliveryStatus.SUCCESSFUL
    submits = smsc.submits
    assert len(submits) == 3  # 431 characters, 458 septets with the escapes: 153 + 153 + 152
    assert outcome.message_id == submits[0].message_id
    assert outcome.message_id is not None
    assert all(s.esm_class & 0x40 for s in submits)
    assert all(s.data_coding == DATA_CODING_GSM7 for s in submits)
    refs = {s.concatenation.reference for s in submits if s.concatenation}
    assert refs == {concatenation_reference(delivery.delivery_id)}
    assert [(s.concatenation.total, s.concatenation.sequence) for s in submits if s.concatenation] \
        == [(3, 1), (3, 2), (3, 3)]  # fmt: skip
    assert all(len(s.payload) <= 153 for s in submits)
    assert len(submits[0].payload) >= 152  # full, unless an escape would have been split
    assert smsc.texts(TO_DIGITS) == [body]


def test_long_ucs2_message_is_concatenated(smsc: FakeSmsc) -> None:
    body = "Привет, мир! " * 12  # 156 characters, Cyrillic: UCS-2
    [outcome] = send(settings_for(smsc.url), sms(body))

    assert outcome.status is DeliveryStatus.SUCCESSFUL
    submits = smsc.submits
    assert len(submits) == 3
    assert all(s.data_coding == DATA_CODING_UCS2 for s in submits)
    assert [len(s.payload) for s in submits] == [134, 134, 2 * (156 - 134)]
    assert len({s.concatenation.reference for s in submits if s.concatenation}) == 1
    assert smsc.texts(TO_DIGITS) == [body]


def test_short_ucs2_message(smsc: FakeSmsc) -> None:
    send(settings_for(smsc.url), sms("Grüße 😀"))  # ü and ß are GSM; the emoji is not
    [submit] = smsc.submits
    assert submit.data_coding == DATA_CODING_UCS2
    assert submit.udh is None
    assert submit.text() == "Grüße 😀"


@pytest.mark.parametrize(
    ("sender", "ton", "npi", "address"),
    [("Herald", 5, 0, "Herald"), ("12345", 0, 1, "12345"),
     ("+4915112345678", 1, 1, "4915112345678")],
)  # fmt: skip
def test_source_address_kinds(
    smsc: FakeSmsc, sender: str, ton: int, npi: int, address: str
) -> None:
    [outcome] = send(settings_for(smsc.url), sms(origination_number=None, sender_id=sender))
    assert outcome.status is DeliveryStatus.SUCCESSFUL
    [submit] = smsc.submits
    assert (submit.source_addr_ton, submit.source_addr_npi, submit.source_addr) == (
        ton,
        npi,
        address,
    )


def test_sender_falls_back_to_channel_then_default(smsc: FakeSmsc) -> None:
    settings = settings_for(smsc.url, default_origination_number="+15550000009")
    channel = channel_config("SMS", settings={"SenderId": "AppName"})

    async def scenario(provider: SmppSmsProvider) -> None:
        await provider.send(sms(origination_number=None), channel)
        await provider.send(sms(origination_number=None), CHANNEL)

    drive(SmppSmsProvider(settings), scenario)
    assert [s.source_addr for s in smsc.submits] == ["AppName", "15550000009"]


def test_unusable_sender_is_refused_without_a_submit(smsc: FakeSmsc) -> None:
    [outcome] = send(
        settings_for(smsc.url), sms(origination_number=None, sender_id="Herald-Alerts!")
    )
    assert outcome.status is DeliveryStatus.PERMANENT_FAILURE
    assert outcome.status_code == 400
    assert smsc.submits == []


def test_no_sender_is_refused(smsc: FakeSmsc) -> None:
    [outcome] = send(settings_for(smsc.url), sms(origination_number=None))
    assert outcome.status is DeliveryStatus.PERMANENT_FAILURE
    assert "HERALD_DEFAULT_ORIGINATION_NUMBER" in outcome.status_message


@pytest.mark.parametrize("address", ["447700900000", "+0447700900000", "+44 7700 900000", ""])
def test_non_e164_address_is_refused_without_connecting(smsc: FakeSmsc, address: str) -> None:
    [outcome] = send(settings_for(smsc.url), sms(to=address))
    assert outcome.status is DeliveryStatus.PERMANENT_FAILURE
    assert outcome.status_code == 400
    assert smsc.binds == [] and smsc.submits == []


def test_one_bound_session_serves_many_sends(smsc: FakeSmsc) -> None:
    outcomes = send(settings_for(smsc.url), *(sms(f"m{i}") for i in range(20)), concurrently=True)
    assert all(o.status is DeliveryStatus.SUCCESSFUL for o in outcomes)
    assert len({o.message_id for o in outcomes}) == 20
    assert len(smsc.binds) == 1
    assert sorted(smsc.texts(TO_DIGITS)) == sorted(f"m{i}" for i in range(20))
    assert smsc.received[-1] == "unbind"  # aclose says goodbye


# --- outcome mapping -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("command_status", "status", "code", "name"),
    [
        (0x58, DeliveryStatus.THROTTLED, 429, "ESME_RTHROTTLED"),
        (0x14, DeliveryStatus.THROTTLED, 429, "ESME_RMSGQFUL"),
        (0x0B, DeliveryStatus.PERMANENT_FAILURE, 400, "ESME_RINVDSTADR"),
        (0x0A, DeliveryStatus.PERMANENT_FAILURE, 400, "ESME_RINVSRCADR"),
        (0x08, DeliveryStatus.TEMPORARY_FAILURE, 503, "ESME_RSYSERR"),
        (0x45, DeliveryStatus.TEMPORARY_FAILURE, 503, "ESME_RSUBMITFAIL"),
        (0x66, DeliveryStatus.PERMANENT_FAILURE, 400, "ESME_RX_R_APPN"),
        (0x0400, DeliveryStatus.UNKNOWN_FAILURE, 500, "unknown status"),
    ],
)
def test_submit_status_maps_to_outcome(
    smsc: FakeSmsc, command_status: int, status: DeliveryStatus, code: int, name: str
) -> None:
    smsc.script(command_status, destination=TO_DIGITS)
    outcomes = send(settings_for(smsc.url), sms(), sms(to="+447700900001"))
    assert outcomes[0].status is status
    assert outcomes[0].status_code == code
    assert f"0x{command_status:08X}" in outcomes[0].status_message
    assert name in outcomes[0].status_message
    assert outcomes[0].message_id is None
    # Only the scripted destination is affected, and the session carries on.
    assert outcomes[1].status is DeliveryStatus.SUCCESSFUL
    assert len(smsc.binds) == 1


def test_a_refused_later_part_fails_the_message_and_keeps_the_first_id(smsc: FakeSmsc) -> None:
    smsc.script(0x00, times=1)
    smsc.script(0x58, times=1)
    [outcome] = send(settings_for(smsc.url), sms("x" * 400))
    assert outcome.status is DeliveryStatus.THROTTLED
    assert "part 2 of 3" in outcome.status_message
    assert outcome.message_id == smsc.submits[0].message_id is not None
    assert len(smsc.submits) == 2  # the third part is not sent


@pytest.mark.parametrize(
    ("url_change", "refuse", "name"),
    [
        ({"password": "wrong"}, None, "ESME_RINVPASWD"),
        ({"system_id": "nobody"}, None, "ESME_RINVSYSID"),
        ({}, 0x0D, "ESME_RBINDFAIL"),
    ],
)
def test_bind_refused_is_permanent_and_names_the_setting(
    smsc: FakeSmsc, url_change: dict[str, str], refuse: int | None, name: str
) -> None:
    smsc.refuse_binds(refuse)
    system_id = url_change.get("system_id", smsc.system_id)
    password = url_change.get("password", smsc.password)
    url = f"smpp://{system_id}:{password}@127.0.0.1:{smsc.port}"
    [outcome] = send(settings_for(url), sms())
    assert outcome.status is DeliveryStatus.PERMANENT_FAILURE
    assert outcome.status_code == 401
    assert name in outcome.status_message
    assert "HERALD_SMPP_URL" in outcome.status_message
    assert smsc.binds[0].password == password
    assert smsc.submits == []


def test_connection_refused_is_temporary() -> None:
    [outcome] = send(settings_for(f"smpp://herald:secret@127.0.0.1:{unused_port()}"), sms())
    assert outcome.status is DeliveryStatus.TEMPORARY_FAILURE
    assert outcome.status_code == 503


def test_no_submit_answer_is_timeout_and_the_next_send_rebinds(smsc: FakeSmsc) -> None:
    smsc.hang(times=1)
    started = time.monotonic()
    outcomes = send(settings_for(smsc.url, provider_timeout_s=0.3), sms("first"), sms("second"))
    assert outcomes[0].status is DeliveryStatus.TIMEOUT
    assert outcomes[0].status_code == 504
    assert outcomes[1].status is DeliveryStatus.SUCCESSFUL
    assert time.monotonic() - started < 1.5
    assert len(smsc.binds) == 2  # the timed-out session was dropped, not reused


def test_no_bind_answer_is_timeout(smsc: FakeSmsc) -> None:
    smsc.hang_binds()
    [outcome] = send(settings_for(smsc.url, provider_timeout_s=0.3), sms())
    assert outcome.status is DeliveryStatus.TIMEOUT
    assert smsc.submits == []


def test_sends_queued_past_their_deadline_are_not_submitted(smsc: FakeSmsc) -> None:
    smsc.hang()
    outcomes = send(
        settings_for(smsc.url, provider_timeout_s=0.3), sms("a"), sms("b"), sms("c"),
        concurrently=True,
    )  # fmt: skip
    assert [o.status for o in outcomes] == [DeliveryStatus.TIMEOUT] * 3
    # The first hung; the others waited in line past their deadline and were never sent,
    # so a retry cannot duplicate them.
    assert len(smsc.submits) == 1


def test_a_dropped_session_is_rebound(smsc: FakeSmsc) -> None:
    async def scenario(provider: SmppSmsProvider) -> list[Outcome]:
        first = await provider.send(sms("one"), CHANNEL)
        smsc.drop_connections()
        await asyncio.sleep(0.05)
        second = await provider.send(sms("two"), CHANNEL)
        return [first, second]

    outcomes = drive(SmppSmsProvider(settings_for(smsc.url)), scenario)
    assert [o.status for o in outcomes] == [DeliveryStatus.SUCCESSFUL] * 2
    assert len(smsc.binds) == 2
    assert smsc.texts(TO_DIGITS) == ["one", "two"]


def test_enquire_link_from_the_smsc_is_answered(smsc: FakeSmsc) -> None:
    async def scenario(provider: SmppSmsProvider) -> None:
        await provider.send(sms("one"), CHANNEL)
        assert smsc.send_enquire_link() == 1
        await asyncio.sleep(0.05)
        await provider.send(sms("two"), CHANNEL)

    drive(SmppSmsProvider(settings_for(smsc.url)), scenario)
    received = smsc.received
    assert received.index("enquire_link_resp") < len(received) - 2
    assert received[received.index("enquire_link_resp") + 1] == "submit_sm"
    assert len(smsc.binds) == 1


def test_smpp_url_limits_are_checked_at_start() -> None:
    with pytest.raises(ConfigError, match="password"):
        SmppSmsProvider(settings_for("smpp://herald:ninechars@127.0.0.1:2775"))
    with pytest.raises(ConfigError, match="system_id"):
        SmppSmsProvider(settings_for("smpp://a-system-id-too-long:pw@127.0.0.1:2775"))


# --- splitter (pure) -----------------------------------------------------------------------


def test_gsm7_code_points() -> None:
    [part], coding = split_message("@£$§¿à€{}[]~|^\\")
    assert coding == DATA_CODING_GSM7
    assert part == bytes.fromhex("00 01 02 5F 60 7F1B65 1B28 1B29 1B3C 1B3E 1B3D1B40 1B14 1B2F")
    assert gsm7_decode(part) == "@£$§¿à€{}[]~|^\\"


@pytest.mark.parametrize(
    ("text", "parts", "coding"),
    [
        ("", 1, DATA_CODING_GSM7),
        ("a" * 160, 1, DATA_CODING_GSM7),
        ("a" * 161, 2, DATA_CODING_GSM7),
        ("€" * 80, 1, DATA_CODING_GSM7),  # 160 septets
        ("€" * 81, 2, DATA_CODING_GSM7),  # 162 septets: 76 + 5 escapes, none split
        ("a" * 153 * 3, 3, DATA_CODING_GSM7),
        ("a" * (153 * 3 + 1), 4, DATA_CODING_GSM7),
        ("ж" * 70, 1, DATA_CODING_UCS2),
        ("ж" * 71, 2, DATA_CODING_UCS2),
        ("ж" * 134, 2, DATA_CODING_UCS2),
        ("ж" * 135, 3, DATA_CODING_UCS2),
    ],
    ids=["empty", "gsm-160", "gsm-161", "escapes-160", "escapes-162", "gsm-3x153",
         "gsm-3x153+1", "ucs2-70", "ucs2-71", "ucs2-2x67", "ucs2-2x67+1"],
)  # fmt: skip
def test_part_counts(text: str, parts: int, coding: int) -> None:
    encoded, data_coding = split_message(text, reference=7)
    assert (len(encoded), data_coding) == (parts, coding)


def test_parts_carry_a_consistent_udh() -> None:
    parts, _ = split_message("b" * 400, reference=0x1AB)
    assert [p[:6] for p in parts] == [bytes([5, 0, 3, 0xAB, 3, i]) for i in (1, 2, 3)]
    assert [len(p) - 6 for p in parts] == [153, 153, 94]


def test_an_escape_is_never_split() -> None:
    text = "a" * 152 + "€" + "b" * 10
    parts, _ = split_message(text)
    assert [len(p) - 6 for p in parts] == [152, 12]
    assert gsm7_decode(b"".join(p[6:] for p in parts)) == text


def test_a_surrogate_pair_is_never_split() -> None:
    text = "ж" * 66 + "😀" * 3  # the first emoji would straddle the 67-unit boundary
    parts, coding = split_message(text)
    assert coding == DATA_CODING_UCS2
    for part in parts:
        part[6:].decode("utf-16-be")  # strict: raises on half a pair
    assert b"".join(p[6:] for p in parts).decode("utf-16-be") == text
    assert len(parts[0]) - 6 == 132


def test_more_than_255_parts_is_refused() -> None:
    split_message("a" * 153 * 255)
    with pytest.raises(MessageTooLong):
        split_message("a" * (153 * 255 + 1))


def test_too_long_message_is_a_permanent_failure(smsc: FakeSmsc) -> None:
    [outcome] = send(settings_for(smsc.url), sms("a" * (153 * 255 + 1)))
    assert outcome.status is DeliveryStatus.PERMANENT_FAILURE
    assert smsc.submits == []


def test_source_address_rejects_what_smpp_cannot_carry() -> None:
    for sender in ("TwelveLetter", "Herald!", "+0123", "Ünïcode"):
        with pytest.raises(ValueError):
            source_address(sender)
