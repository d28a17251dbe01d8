"""SMS over SMPP 3.4 to an SMSC (``HERALD_SMS_TRANSPORT=smpp``, ``HERALD_SMPP_URL``).

One bound transmitter session per process, made with ``smpplib`` (synchronous, not
thread-safe), so every blocking call runs on this provider's one thread; the event loop only
waits for it. The session is made on first use and made again after any failure.

Each send is bounded by ``HERALD_PROVIDER_TIMEOUT_S``, counted from when ``send`` is called:
the socket waits only for what remains, and a send that waited in line behind others until
less than a fifth of its time is left is answered ``TIMEOUT`` without being submitted (it
would likely time out after the SMSC took it, and its retry would be a duplicate). After a
timeout the session is closed, since a late ``submit_sm_resp`` would answer the wrong request.
A long message refused at part k is reported with that part's status; a retry resends every
part.

Long texts go as concatenated parts with an 8-bit-reference UDH (3GPP TS 23.040 §9.2.3.24.1),
built by :func:`split_message`. Every part gets its own ``message_id`` from the SMSC; the
``MessageId`` is the first part's. Submission is one PDU at a time (window 1), and no delivery
receipts are asked for (a transmitter bind cannot receive them).

``StatusCode`` has no SMPP counterpart; Pinpoint's is HTTP-like, so the SMSC's
``command_status`` is mapped to one, per :data:`SMPP_OUTCOMES`: 200 accepted, 400 refused for
good, 401 bind refused (credentials in ``HERALD_SMPP_URL``), 429 throttled, 503 temporary
(including no connection), 504 no answer in time, 500 a status the table does not know.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import re
import select
import time
import zlib
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import unquote, urlsplit

import smpplib.client
import smpplib.consts
import smpplib.exceptions
import smpplib.smpp

from worker.core.addresses import is_e164
from worker.core.config import ConfigError, Settings
from worker.core.vocabulary import (
    NO_ANSWER_STATUS,
    NO_CONNECTION_STATUS,
    ChannelConfig,
    DeliveryStatus,
    Outcome,
    OutgoingMessage,
)
from worker.providers.phone import refused, sms_route

DEFAULT_PORT = 2775

# --- GSM 03.38 / UCS-2 splitting -----------------------------------------------------------

# 3GPP TS 23.038 §6.2.1: the default alphabet, position = septet value, and its extension
# table (each reached through ESC, 0x1B, so it costs two septets).
GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = {
    "\f": 0x0A,
    "^": 0x14,
    "{": 0x28,
    "}": 0x29,
    "\\": 0x2F,
    "[": 0x3C,
    "~": 0x3D,
    "]": 0x3E,
    "|": 0x40,
    "€": 0x65,
}
_GSM7_INDEX = {char: index for index, char in enumerate(GSM7_BASIC) if char != "\x1b"}

DATA_CODING_GSM7 = 0x00  # SMSC default alphabet: GSM 03.38, one septet per octet (unpacked)
DATA_CODING_UCS2 = 0x08
ESM_CLASS_UDHI = 0x40  # short_message starts with a user data header

GSM7_SINGLE, GSM7_PART = 160, 153  # septets; a 6-octet UDH takes 7 septets of the 160
UCS2_SINGLE, UCS2_PART = 70, 67  # UTF-16 code units; 140 octets, 134 after the UDH
MAX_PARTS = 255


class MessageTooLong(ValueError):
    pass


def gsm7_encode_char(char: str) -> bytes | None:
    if char in _GSM7_INDEX:
        return bytes((_GSM7_INDEX[char],))
    if char in GSM7_EXTENSION:
        return bytes((0x1B, GSM7_EXTENSION[char]))
    return None


def _units(text: str) -> tuple[list[bytes], int]:
    """Each character as its encoded bytes, in GSM-7 when every character has a GSM-7 form,
    else in UTF-16BE; the encoding unit (1 octet per septet, 2 octets per UTF-16 unit)."""
    gsm: list[bytes] = []
    for char in text:
        encoded = gsm7_encode_char(char)
        if encoded is None:
            return [char.encode("utf-16-be") for char in text], 2
        gsm.append(encoded)
    return gsm, 1


def split_message(text: str, reference: int = 0) -> tuple[list[bytes], int]:
    """The ``short_message`` of each part, and the ``data_coding`` for all of them.

    GSM-7 when every character has a GSM-7 form (160 septets in one part, else 153 per part),
    otherwise UCS-2 (70 UTF-16 units, else 67). A part never ends inside an escape sequence or
    a surrogate pair. More than one part: each starts with the concatenation UDH
    ``05 00 03 <reference> <total> <sequence>`` and ``esm_class`` must carry UDHI.
    """
    units, width = _units(text)
    data_coding = DATA_CODING_GSM7 if width == 1 else DATA_CODING_UCS2
    single, per_part = (GSM7_SINGLE, GSM7_PART) if width == 1 else (UCS2_SINGLE, UCS2_PART)
    limit_octets = per_part * width
    if sum(len(u) for u in units) <= single * width:
        return [b"".join(units)], data_coding
    chunks: list[bytes] = []
    current = bytearray()
    for unit in units:
        if len(current) + len(unit) > limit_octets:
            chunks.append(bytes(current))
            current = bytearray()
        current += unit
    if current:
        chunks.append(bytes(current))
    if len(chunks) > MAX_PARTS:
        raise MessageTooLong(f"the message needs {len(chunks)} parts; SMS allows {MAX_PARTS}")
    total = len(chunks)
    ref = reference & 0xFF
    return [
        bytes((0x05, 0x00, 0x03, ref, total, seq)) + chunk
        for seq, chunk in enumerate(chunks, start=1)
    ], data_coding


# --- addresses -----------------------------------------------------------------------------

TON_UNKNOWN, TON_INTERNATIONAL, TON_ALPHANUMERIC = 0x00, 0x01, 0x05
NPI_UNKNOWN, NPI_ISDN = 0x00, 0x01

_ALPHANUMERIC_SENDER = re.compile(r"^(?=.*[A-Za-z])[A-Za-z0-9 ]{1,11}$")
_DIGITS = re.compile(r"^\d{1,20}$")


def source_address(sender: str) -> tuple[int, int, str]:
    """(source_addr_ton, source_addr_npi, source_addr) for a sender.

    ``+`` E.164 → international/ISDN without the ``+``; letters (an alphanumeric sender ID,
    at most 11 characters on the air interface) → alphanumeric/unknown; bare digits (short
    codes, national numbers) → unknown/ISDN, leaving the interpretation to the SMSC.
    """
    if is_e164(sender):
        return TON_INTERNATIONAL, NPI_ISDN, sender[1:]
    if _ALPHANUMERIC_SENDER.fullmatch(sender):
        return TON_ALPHANUMERIC, NPI_UNKNOWN, sender
    if _DIGITS.fullmatch(sender):
        return TON_UNKNOWN, NPI_ISDN, sender
    raise ValueError(
        f"sender {sender!r} is neither an E.164 number, digits, nor an alphanumeric "
        "sender ID of at most 11 letters and digits"
    )


def concatenation_reference(delivery_id: str) -> int:
    """Stable per delivery, so a resent long message reassembles as the same message."""
    return zlib.crc32(delivery_id.encode()) & 0xFF


# --- outcome table -------------------------------------------------------------------------

_OK, _PERM, _TEMP, _THROTTLED = (
    DeliveryStatus.SUCCESSFUL,
    DeliveryStatus.PERMANENT_FAILURE,
    DeliveryStatus.TEMPORARY_FAILURE,
    DeliveryStatus.THROTTLED,
)

# command_status → (status, StatusCode, SMPP 3.4 name). Meanings from SMPP v3.4 §5.1.3
# (Table 5-2, command_status values); the retry decision is Herald's reading of each.
SMPP_OUTCOMES: dict[int, tuple[DeliveryStatus, int, str]] = {
    0x00: (_OK, 200, "ESME_ROK"),
    0x58: (_THROTTLED, 429, "ESME_RTHROTTLED"),  # over the SMSC's allowed rate
    0x14: (_THROTTLED, 429, "ESME_RMSGQFUL"),  # SMSC queue full: back off, then resend
    0x08: (_TEMP, 503, "ESME_RSYSERR"),  # SMSC system error
    0x45: (_TEMP, 503, "ESME_RSUBMITFAIL"),  # submit_sm failed, no reason given
    0x64: (_TEMP, 503, "ESME_RX_T_APPN"),  # temporary application error
    0x04: (_TEMP, 503, "ESME_RINVBNDSTS"),  # our session's bind state is wrong: rebind
    0x0B: (_PERM, 400, "ESME_RINVDSTADR"),
    0x50: (_PERM, 400, "ESME_RINVDSTTON"),
    0x51: (_PERM, 400, "ESME_RINVDSTNPI"),
    0x0A: (_PERM, 400, "ESME_RINVSRCADR"),
    0x48: (_PERM, 400, "ESME_RINVSRCTON"),
    0x49: (_PERM, 400, "ESME_RINVSRCNPI"),
    0x01: (_PERM, 400, "ESME_RINVMSGLEN"),
    0x02: (_PERM, 400, "ESME_RINVCMDLEN"),
    0x03: (_PERM, 400, "ESME_RINVCMDID"),
    0x43: (_PERM, 400, "ESME_RINVESMCLASS"),
    0x65: (_PERM, 400, "ESME_RX_P_APPN"),  # permanent application error
    0x66: (_PERM, 400, "ESME_RX_R_APPN"),  # message rejected
    0x0D: (_PERM, 401, "ESME_RBINDFAIL"),
    0x0E: (_PERM, 401, "ESME_RINVPASWD"),
    0x0F: (_PERM, 401, "ESME_RINVSYSID"),
}
_BIND_REFUSED = frozenset({0x0D, 0x0E, 0x0F})


def status_outcome(command_status: int, context: str = "") -> Outcome:
    """The outcome for a non-zero ``command_status`` (an unknown one is UNKNOWN_FAILURE)."""
    status, code, name = SMPP_OUTCOMES.get(
        command_status, (DeliveryStatus.UNKNOWN_FAILURE, 500, "unknown status")
    )
    description = smpplib.consts.DESCRIPTIONS.get(command_status, "")
    text = f"SMSC answered 0x{command_status:08X} {name}"
    if description:
        text += f" ({description})"
    if command_status in _BIND_REFUSED:
        text += ": check system_id and password in HERALD_SMPP_URL"
    if context:
        text += f" {context}"
    return Outcome(status=status, status_code=code, status_message=text)


def _no_answer(timeout_s: float, what: str) -> Outcome:
    return Outcome(
        status=DeliveryStatus.TIMEOUT,
        status_code=NO_ANSWER_STATUS,
        status_message=f"SMSC {what} within {timeout_s:g}s",
    )


# --- the session ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Submission:
    source: tuple[int, int, str]
    destination: str  # digits, international
    parts: list[bytes]
    data_coding: int
    deadline: float  # time.monotonic()


_LEAST_TIME_TO_START = 0.2  # of the provider timeout


class _SessionLost(Exception):
    """The SMSC closed or unbound the session."""


class _SmppSession:
    """One bound transmitter session. Used only from the provider's single thread."""

    def __init__(self, host: str, port: int, system_id: str, password: str, timeout_s: float):
        self.host, self.port = host, port
        self.system_id, self.password = system_id, password
        self.timeout_s = timeout_s
        self._client: Any = None

    def submit(self, job: _Submission) -> Outcome:
        # A send that waited in line until almost nothing is left is not started: it would
        # most likely time out after the SMSC took it, and its retry would be a duplicate.
        if job.deadline - time.monotonic() < self.timeout_s * _LEAST_TIME_TO_START:
            return _no_answer(self.timeout_s, "was not reached: the send waited in line")
        first_id: str | None = None
        try:
            client = self._bound(job.deadline)
            if isinstance(client, Outcome):
                return client
            esm_class = ESM_CLASS_UDHI if len(job.parts) > 1 else 0
            ton, npi, source = job.source
            for index, part in enumerate(job.parts, start=1):
                pdu = smpplib.smpp.make_pdu(
                    "submit_sm",
                    client=client,
                    source_addr_ton=ton,
                    source_addr_npi=npi,
                    source_addr=source,
                    dest_addr_ton=TON_INTERNATIONAL,
                    dest_addr_npi=NPI_ISDN,
                    destination_addr=job.destination,
                    esm_class=esm_class,
                    data_coding=job.data_coding,
                    registered_delivery=0,
                    short_message=part,
                )
                response = self._exchange(client, pdu, job.deadline)
                if response.status != 0:
                    where = f"(part {index} of {len(job.parts)})" if len(job.parts) > 1 else ""
                    outcome = status_outcome(response.status, where)
                    if response.status == 0x04:
                        self.close()
                    return _with_id(outcome, first_id)
                if first_id is None:
                    raw = response.message_id or b""
                    first_id = raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw
        except TimeoutError:
            self.close()
            return _with_id(_no_answer(self.timeout_s, "did not answer"), first_id)
        except (OSError, smpplib.exceptions.ConnectionError, _SessionLost) as err:
            self.close()
            detail = str(err) or type(err).__name__
            return _with_id(
                Outcome(
                    status=_TEMP,
                    status_code=NO_CONNECTION_STATUS,
                    status_message=f"SMPP connection to {self.host}:{self.port} failed: {detail}",
                ),
                first_id,
            )
        except (smpplib.exceptions.PDUError, smpplib.exceptions.UnknownCommandError) as err:
            self.close()
            return _with_id(
                Outcome(status=_TEMP, status_code=503, status_message=f"SMPP error: {err}"),
                first_id,
            )
        parts = len(job.parts)
        return Outcome(
            status=_OK,
            status_code=200,
            status_message=f"accepted by the SMSC in {parts} part{'s' if parts > 1 else ''}",
            message_id=first_id,
        )

    def _bound(self, deadline: float) -> Any:
        """The bound client, binding first if needed; an Outcome if the bind was refused."""
        if self._client is not None:
            try:
                self._answer_pending(self._client)
            except (OSError, smpplib.exceptions.ConnectionError, _SessionLost):
                self.close()
        if self._client is not None:
            return self._client
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        client = smpplib.client.Client(
            self.host, self.port, timeout=remaining, allow_unknown_opt_params=True
        )
        self._client = client
        client.connect()
        bind = smpplib.smpp.make_pdu(
            "bind_transmitter",
            client=client,
            system_id=self.system_id,
            password=self.password,
            system_type="",
        )
        response = self._exchange(client, bind, deadline)
        if response.status != 0:
            self.close()
            return status_outcome(response.status, "on bind_transmitter")
        return client

    def _exchange(self, client: Any, pdu: Any, deadline: float) -> Any:
        """Send ``pdu`` and return its response, answering what the SMSC asks meanwhile."""
        client.send_pdu(pdu)
        expected = pdu.command + "_resp"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            # smpplib takes a timeout only when it makes the socket; the deadline moves.
            client._socket.settimeout(remaining)
            response = client.read_pdu()
            if self._answer_request(client, response):
                continue
            if response.sequence == pdu.sequence and response.command in (
                expected,
                "generic_nack",
            ):
                return response

    def _answer_request(self, client: Any, pdu: Any) -> bool:
        """Answer a request from the SMSC; False when ``pdu`` is not one."""
        if pdu.command == "enquire_link":
            reply = smpplib.smpp.make_pdu("enquire_link_resp", client=client)
            reply.sequence = pdu.sequence
            client.send_pdu(reply)
            return True
        if pdu.command == "unbind":
            reply = smpplib.smpp.make_pdu("unbind_resp", client=client)
            reply.sequence = pdu.sequence
            client.send_pdu(reply)
            raise _SessionLost("the SMSC unbound the session")
        return False

    def _answer_pending(self, client: Any) -> None:
        """Between sends nobody reads the socket: answer what arrived (enquire_link, unbind)
        and notice a session the SMSC closed, before trusting it with a message."""
        while select.select([client._socket], [], [], 0)[0]:
            client._socket.settimeout(self.timeout_s)
            self._answer_request(client, client.read_pdu())

    def close(self, *, unbind: bool = False) -> None:
        """Drop the session; ``unbind`` first says goodbye, for a session still in step."""
        client, self._client = self._client, None
        if client is None:
            return
        if unbind and client.state == smpplib.consts.SMPP_CLIENT_STATE_BOUND_TX:
            with contextlib.suppress(OSError, smpplib.exceptions.ConnectionError, _SessionLost):
                self._exchange(
                    client,
                    smpplib.smpp.make_pdu("unbind", client=client),
                    time.monotonic() + min(self.timeout_s, 1.0),
                )
        # Not smpplib's disconnect(), which logs a warning for every session not unbound.
        if client._socket is not None:
            client._socket.close()
            client._socket = None
        client.state = smpplib.consts.SMPP_CLIENT_STATE_CLOSED


def _with_id(outcome: Outcome, message_id: str | None) -> Outcome:
    return outcome if message_id is None else replace(outcome, message_id=message_id)


def parse_smpp_url(url: str) -> tuple[str, int, str, str]:
    """(host, port, system_id, password) from ``smpp://system_id:password@host:port``."""
    parts = urlsplit(url)
    system_id = unquote(parts.username or "")
    password = unquote(parts.password or "")
    # SMPP 3.4 §4.1.1: system_id is at most 15 octets, password 8; smpplib would cut them
    # silently and the bind would fail for a reason nobody could see.
    if not system_id or len(system_id.encode()) > 15:
        raise ConfigError("HERALD_SMPP_URL: system_id must be 1 to 15 characters")
    if len(password.encode()) > 8:
        raise ConfigError("HERALD_SMPP_URL: the SMPP password is at most 8 characters")
    if not parts.hostname:
        raise ConfigError("HERALD_SMPP_URL needs a host")
    return parts.hostname, parts.port or DEFAULT_PORT, system_id, password


class SmppSmsProvider:
    """SMS through an SMSC over SMPP 3.4."""

    name = "smpp"
    channel_types = ("SMS",)

    def __init__(self, settings: Settings) -> None:
        if not settings.smpp_url:
            raise ConfigError("the SMPP transport needs HERALD_SMPP_URL")
        host, port, system_id, password = parse_smpp_url(settings.smpp_url)
        self._timeout = settings.provider_timeout_s
        self._default_sender = settings.default_origination_number
        self._session = _SmppSession(host, port, system_id, password, self._timeout)
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    def _thread(self) -> concurrent.futures.ThreadPoolExecutor:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="herald-smpp"
            )
        return self._executor

    async def send(self, delivery: OutgoingMessage, channel: ChannelConfig) -> Outcome:
        route = sms_route(delivery, channel, self.name, self._default_sender)
        if isinstance(route, Outcome):
            return route
        try:
            source = source_address(route.sender)
            parts, data_coding = split_message(
                route.content.body, concatenation_reference(delivery.delivery_id)
            )
        except ValueError as err:
            return refused(str(err))
        job = _Submission(
            source=source,
            destination=route.to[1:],
            parts=parts,
            data_coding=data_coding,
            deadline=time.monotonic() + self._timeout,
        )
        future = self._thread().submit(self._session.submit, job)
        try:
            # The session keeps to the deadline itself; this only guards against a stuck thread.
            return await asyncio.wait_for(asyncio.wrap_future(future), self._timeout + 1.0)
        except TimeoutError:
            future.cancel()
            return _no_answer(self._timeout, "did not answer")

    async def aclose(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return
        await asyncio.wrap_future(executor.submit(self._session.close, unbind=True))
        executor.shutdown(wait=False)
