"""A fake SMSC speaking SMPP 3.4 over TCP on 127.0.0.1.

PDUs are read and written by hand with ``struct``, independently of smpplib, so the provider
(which uses smpplib) is checked against the specification rather than against itself.

It accepts ``bind_transmitter`` and ``bind_transceiver`` (wrong system_id → ESME_RINVSYSID,
wrong password → ESME_RINVPASWD, or any status set by :meth:`refuse_binds`), answers
``enquire_link`` and ``unbind``, answers ``submit_sm`` with a message id and records each one
(addresses, ``esm_class``, ``data_coding``, the raw ``short_message`` and its decoded
concatenation UDH). It can be scripted to answer ``submit_sm`` with any ``command_status``,
per destination or for all, to hang, to drop every connection, and to send ``enquire_link``.

    with FakeSmsc() as smsc:
        settings = Settings(sms_transport="smpp", smpp_url=smsc.url)
        smsc.script(0x58, destination="447700900001")      # ESME_RTHROTTLED
        smsc.hang(destination="447700900002")
        ...
        assert smsc.texts("447700900000") == ["hello"]
"""

from __future__ import annotations

import socket
import socketserver
import struct
import threading
from dataclasses import dataclass, field

from tests.fakes.http import HANG_S, FakeServer, Scripts, ThreadedTcpServer

BIND_RECEIVER = 0x00000001
BIND_TRANSMITTER = 0x00000002
SUBMIT_SM = 0x00000004
UNBIND = 0x00000006
BIND_TRANSCEIVER = 0x00000009
ENQUIRE_LINK = 0x00000015
GENERIC_NACK = 0x80000000
RESPONSE = 0x80000000

ESME_ROK = 0x00
ESME_RINVCMDID = 0x03
ESME_RINVBNDSTS = 0x04
ESME_RINVPASWD = 0x0E
ESME_RINVSYSID = 0x0F

COMMAND_NAMES = {
    BIND_RECEIVER: "bind_receiver",
    BIND_TRANSMITTER: "bind_transmitter",
    SUBMIT_SM: "submit_sm",
    UNBIND: "unbind",
    BIND_TRANSCEIVER: "bind_transceiver",
    ENQUIRE_LINK: "enquire_link",
    GENERIC_NACK: "generic_nack",
}

# 3GPP TS 23.038 default alphabet, laid out as the specification's table (row = low nibble
# would be the usual print; here simply septet order, 16 per line).
_GSM_DEFAULT = [
    *"@£$¥èéùìòÇ\nØø\rÅå",
    *"Δ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ",
    *" !\"#¤%&'()*+,-./",
    *"0123456789:;<=>?",
    *"¡ABCDEFGHIJKLMNO",
    *"PQRSTUVWXYZÄÖÑÜ§",
    *"¿abcdefghijklmno",
    *"pqrstuvwxyzäöñüà",
]
_GSM_EXTENSION = {
    0x0A: "\f",
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}


def gsm7_decode(septets: bytes) -> str:
    """Unpacked GSM 03.38 (one septet per octet) to text."""
    out: list[str] = []
    escape = False
    for value in septets:
        if value > 0x7F:
            raise ValueError(f"0x{value:02X} is not a septet")
        if escape:
            out.append(_GSM_EXTENSION.get(value, " "))
            escape = False
        elif value == 0x1B:
            escape = True
        else:
            out.append(_GSM_DEFAULT[value])
    if escape:
        raise ValueError("message ends inside an escape sequence")
    return "".join(out)


def decode_user_data(payload: bytes, data_coding: int) -> str:
    if data_coding == 0x00:
        return gsm7_decode(payload)
    if data_coding == 0x08:
        return payload.decode("utf-16-be")  # strict: a split surrogate pair fails here
    if data_coding == 0x03:
        return payload.decode("latin-1")
    raise ValueError(f"data_coding 0x{data_coding:02X} not understood by the fake")


@dataclass(frozen=True)
class Concatenation:
    reference: int
    total: int
    sequence: int


@dataclass(frozen=True)
class SubmitSm:
    """One submit_sm the fake received, decoded."""

    system_id: str  # of the session it came on
    sequence: int
    service_type: str
    source_addr_ton: int
    source_addr_npi: int
    source_addr: str
    dest_addr_ton: int
    dest_addr_npi: int
    destination_addr: str
    esm_class: int
    registered_delivery: int
    data_coding: int
    short_message: bytes
    udh: bytes | None  # the user data header, when esm_class has UDHI
    concatenation: Concatenation | None
    payload: bytes  # short_message without the UDH
    command_status: int  # what the fake answered
    message_id: str | None

    def text(self) -> str:
        return decode_user_data(self.payload, self.data_coding)


def _parse_udh(short_message: bytes) -> tuple[bytes, Concatenation | None, bytes]:
    length = short_message[0]
    udh = short_message[: 1 + length]
    concatenation = None
    pos = 1
    while pos < 1 + length:
        iei, iel = udh[pos], udh[pos + 1]
        data = udh[pos + 2 : pos + 2 + iel]
        if iei == 0x00 and iel == 3:  # 8-bit reference
            concatenation = Concatenation(data[0], data[1], data[2])
        elif iei == 0x08 and iel == 4:  # 16-bit reference
            concatenation = Concatenation(int.from_bytes(data[:2], "big"), data[2], data[3])
        pos += 2 + iel
    return udh, concatenation, short_message[1 + length :]


class _Reader:
    def __init__(self, body: bytes) -> None:
        self.body, self.pos = body, 0

    def cstring(self) -> str:
        end = self.body.index(b"\x00", self.pos)
        value = self.body[self.pos : end].decode("latin-1")
        self.pos = end + 1
        return value

    def u8(self) -> int:
        value = self.body[self.pos]
        self.pos += 1
        return value

    def octets(self, n: int) -> bytes:
        value = self.body[self.pos : self.pos + n]
        self.pos += n
        return value


@dataclass
class _Scripted:
    status: int
    hang: bool


@dataclass
class BindAttempt:
    command: str
    system_id: str
    password: str
    interface_version: int
    command_status: int


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    submits: list[SubmitSm] = field(default_factory=list)
    binds: list[BindAttempt] = field(default_factory=list)
    received: list[str] = field(default_factory=list)
    bind_status: int | None = None
    hang_binds: bool = False
    connections: list[_Connection] = field(default_factory=list)  # for enquire_link
    next_id: int = 1


class _Connection:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.write_lock = threading.Lock()
        self.system_id: str | None = None
        self.sequence = 0x7000_0000  # for PDUs the SMSC originates

    def send(self, command_id: int, status: int, sequence: int, body: bytes = b"") -> None:
        pdu = struct.pack(">LLLL", 16 + len(body), command_id, status, sequence) + body
        with self.write_lock:
            self.sock.sendall(pdu)

    def recv_exact(self, n: int) -> bytes | None:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                return None
            data += chunk
        return data


class FakeSmsc(FakeServer):
    def __init__(self, system_id: str = "herald", password: str = "secret") -> None:
        super().__init__()
        self.system_id = system_id
        self.password = password
        self._state = _State()
        self._scripts: Scripts[_Scripted] = Scripts()

    def _make_server(self) -> ThreadedTcpServer:
        fake = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                fake._serve(self.request)

        return ThreadedTcpServer(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"smpp://{self.system_id}:{self.password}@127.0.0.1:{self.port}"

    # -- scripting -----------------------------------------------------------------------

    def script(
        self, command_status: int, *, destination: str | None = None, times: int | None = None
    ) -> None:
        """Answer submit_sm (to ``destination``, digits without ``+``, or all) with
        ``command_status``."""
        self._scripts.add(destination, _Scripted(command_status, False), times)

    def hang(self, *, destination: str | None = None, times: int | None = None) -> None:
        """Read submit_sm but never answer (the connection stays open until stop)."""
        self._scripts.add(destination, _Scripted(0, True), times)

    def refuse_binds(self, command_status: int | None) -> None:
        """Answer every bind with ``command_status`` (None: check credentials again)."""
        with self._state.lock:
            self._state.bind_status = command_status

    def hang_binds(self, hang: bool = True) -> None:
        with self._state.lock:
            self._state.hang_binds = hang

    def send_enquire_link(self) -> int:
        """Send enquire_link on every bound connection; returns how many were sent."""
        with self._state.lock:
            connections = [c for c in self._state.connections if c.system_id is not None]
        for connection in connections:
            connection.sequence += 1
            connection.send(ENQUIRE_LINK, ESME_ROK, connection.sequence)
        return len(connections)

    # -- what was received ---------------------------------------------------------------

    @property
    def submits(self) -> list[SubmitSm]:
        with self._state.lock:
            return list(self._state.submits)

    @property
    def binds(self) -> list[BindAttempt]:
        with self._state.lock:
            return list(self._state.binds)

    @property
    def received(self) -> list[str]:
        """Names of every PDU received, in order (e.g. "enquire_link_resp")."""
        with self._state.lock:
            return list(self._state.received)

    def texts(self, destination: str) -> list[str]:
        """The messages accepted for ``destination``, concatenated parts reassembled."""
        singles: list[str] = []
        groups: dict[int, dict[int, SubmitSm]] = {}
        for submit in self.submits:
            if submit.destination_addr != destination or submit.command_status != ESME_ROK:
                continue
            if submit.concatenation is None:
                singles.append(submit.text())
            else:
                groups.setdefault(submit.concatenation.reference, {})[
                    submit.concatenation.sequence
                ] = submit
        for parts in groups.values():
            total = next(iter(parts.values())).concatenation.total  # type: ignore[union-attr]
            assert sorted(parts) == list(range(1, total + 1)), f"missing parts: {sorted(parts)}"
            # Decode the whole, not part by part: a part may not end mid-character.
            data_coding = parts[1].data_coding
            singles.append(
                decode_user_data(b"".join(parts[i].payload for i in sorted(parts)), data_coding)
            )
        return singles

    # -- the protocol --------------------------------------------------------------------

    def _serve(self, sock: socket.socket) -> None:
        connection = _Connection(sock)
        self._track(sock)
        with self._state.lock:
            self._state.connections.append(connection)
        try:
            while True:
                header = connection.recv_exact(16)
                if header is None:
                    return
                length, command_id, _status, sequence = struct.unpack(">LLLL", header)
                body = connection.recv_exact(length - 16) if length > 16 else b""
                if body is None:
                    return
                name = COMMAND_NAMES.get(command_id & ~RESPONSE, f"0x{command_id:08X}")
                with self._state.lock:
                    self._state.received.append(
                        name + "_resp"
                        if command_id & RESPONSE and command_id != GENERIC_NACK
                        else name
                    )
                if command_id & RESPONSE:
                    continue
                if not self._dispatch(connection, command_id, sequence, body):
                    return
        except OSError:
            return
        finally:
            self._forget(sock)
            with self._state.lock:
                self._state.connections.remove(connection)
            sock.close()

    def _dispatch(
        self, connection: _Connection, command_id: int, sequence: int, body: bytes
    ) -> bool:
        if command_id in (BIND_TRANSMITTER, BIND_TRANSCEIVER):
            return self._bind(connection, command_id, sequence, body)
        if command_id == ENQUIRE_LINK:
            connection.send(ENQUIRE_LINK | RESPONSE, ESME_ROK, sequence)
            return True
        if command_id == UNBIND:
            connection.send(UNBIND | RESPONSE, ESME_ROK, sequence)
            return False
        if command_id == SUBMIT_SM:
            if connection.system_id is None:
                connection.send(SUBMIT_SM | RESPONSE, ESME_RINVBNDSTS, sequence)
                return True
            return self._submit(connection, sequence, body)
        connection.send(GENERIC_NACK, ESME_RINVCMDID, sequence)
        return True

    def _bind(self, connection: _Connection, command_id: int, sequence: int, body: bytes) -> bool:
        reader = _Reader(body)
        system_id, password = reader.cstring(), reader.cstring()
        reader.cstring()  # system_type
        interface_version = reader.u8()
        with self._state.lock:
            forced, hang = self._state.bind_status, self._state.hang_binds
        if hang:
            self.stopping.wait(HANG_S)
            return False
        if forced is not None:
            status = forced
        elif system_id != self.system_id:
            status = ESME_RINVSYSID
        elif password != self.password:
            status = ESME_RINVPASWD
        else:
            status = ESME_ROK
        with self._state.lock:
            self._state.binds.append(
                BindAttempt(
                    COMMAND_NAMES[command_id], system_id, password, interface_version, status
                )
            )
        if status != ESME_ROK:
            # SMPP 3.4 §4.1.2: no body when command_status is non-zero.
            connection.send(command_id | RESPONSE, status, sequence)
            return True
        connection.system_id = system_id
        connection.send(command_id | RESPONSE, ESME_ROK, sequence, b"FakeSMSC\x00")
        return True

    def _submit(self, connection: _Connection, sequence: int, body: bytes) -> bool:
        reader = _Reader(body)
        service_type = reader.cstring()
        source_ton, source_npi, source = reader.u8(), reader.u8(), reader.cstring()
        dest_ton, dest_npi, destination = reader.u8(), reader.u8(), reader.cstring()
        esm_class = reader.u8()
        reader.u8()  # protocol_id
        reader.u8()  # priority_flag
        reader.cstring()  # schedule_delivery_time
        reader.cstring()  # validity_period
        registered_delivery = reader.u8()
        reader.u8()  # replace_if_present_flag
        data_coding = reader.u8()
        reader.u8()  # sm_default_msg_id
        short_message = reader.octets(reader.u8())
        udh: bytes | None = None
        concatenation = None
        payload = short_message
        if esm_class & 0x40 and short_message:
            udh, concatenation, payload = _parse_udh(short_message)
        scripted = self._scripts.take(destination)
        status = scripted.status if scripted is not None else ESME_ROK
        message_id: str | None = None
        with self._state.lock:
            if status == ESME_ROK and not (scripted and scripted.hang):
                message_id = f"fake-{self._state.next_id:06d}"
                self._state.next_id += 1
            self._state.submits.append(
                SubmitSm(
                    system_id=connection.system_id or "",
                    sequence=sequence,
                    service_type=service_type,
                    source_addr_ton=source_ton,
                    source_addr_npi=source_npi,
                    source_addr=source,
                    dest_addr_ton=dest_ton,
                    dest_addr_npi=dest_npi,
                    destination_addr=destination,
                    esm_class=esm_class,
                    registered_delivery=registered_delivery,
                    data_coding=data_coding,
                    short_message=short_message,
                    udh=udh,
                    concatenation=concatenation,
                    payload=payload,
                    command_status=-1 if scripted and scripted.hang else status,
                    message_id=message_id,
                )
            )
        if scripted is not None and scripted.hang:
            self.stopping.wait(HANG_S)
            return False
        if message_id is not None:
            connection.send(SUBMIT_SM | RESPONSE, ESME_ROK, sequence, message_id.encode() + b"\0")
        else:
            connection.send(SUBMIT_SM | RESPONSE, status, sequence)
        return True
