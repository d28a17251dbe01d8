"""A real SMTP server (aiosmtpd) on 127.0.0.1 that records what it receives.

Replies can be scripted per recipient: ``server.script("x@example.com", [451, 250])`` makes
the first delivery to x fail temporarily and the next succeed.

``FakeSmtp(starttls=True)`` offers STARTTLS with a certificate from the test CA
(:attr:`FakeSmtp.ca_path`, for ``HERALD_CA_BUNDLE``). Without it, a fake with credentials
speaks plain SMTP, so its :attr:`~FakeSmtp.url` opts in to AUTH without TLS
(``allow_plain_auth=true``), as an operator with a local relay would.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import socket
import ssl
import threading
from collections import defaultdict, deque
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.fakes.tls import default_ca

HANG = 0  # a scripted "reply" that never comes

_REPLIES = {
    250: "250 2.0.0 OK queued",
    421: "421 4.7.0 Try again later",
    450: "450 4.2.1 Mailbox busy",
    451: "451 4.3.0 Temporary local problem",
    550: "550 5.1.1 No such user",
    552: "552 5.3.4 Message too big",
    554: "554 5.7.1 Rejected as spam",
}


@dataclass
class Received:
    envelope_from: str
    recipients: list[str]
    data: bytes
    tls: bool = False  # the session had been upgraded with STARTTLS
    message: EmailMessage = field(init=False)

    def __post_init__(self) -> None:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        self.message = parsed


class _Handler:
    def __init__(self, server: FakeSmtp) -> None:
        self.server = server

    async def handle_RCPT(self, smtp: Any, session: Any, envelope: Any, address: str,
                          options: Any) -> str:
        code = self.server._next_reply(address, stage="rcpt")
        if code is not None and code != 250:
            return _REPLIES[code]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, smtp: Any, session: Any, envelope: Any) -> str:
        if self.server.data_delay_s:
            await asyncio.sleep(self.server.data_delay_s)
        code = self.server._next_reply(envelope.rcpt_tos[0], stage="data")
        if code == HANG:
            await asyncio.sleep(3600)
        if code is not None and code != 250:
            return _REPLIES[code]
        with self.server._lock:
            self.server.received.append(Received(
                envelope.mail_from, list(envelope.rcpt_tos), envelope.content,
                tls=session.ssl is not None,
            ))
        return _REPLIES[250]


class FakeSmtp:
    def __init__(self, username: str | None = None, password: str | None = None, *,
                 starttls: bool = False) -> None:
        self.received: list[Received] = []
        self.auth_over_tls: list[bool] = []  # one entry per AUTH attempt: was it encrypted?
        self.starttls = starttls
        self.ca_path: Path | None = None
        self.data_delay_s = 0.0
        self._scripts: dict[str, deque[tuple[int, str]]] = defaultdict(deque)
        self._lock = threading.Lock()
        self._username = username
        self._password = password
        auth: dict[str, Any] = {}
        if username is not None:
            auth = {
                "authenticator": self._authenticate,
                "auth_require_tls": False,
            }
        tls: dict[str, Any] = {}
        if starttls:
            ca = default_ca()
            files = ca.issue_server_files()
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(files.cert_path, files.key_path)
            tls = {"tls_context": context}
            self.ca_path = files.ca_path
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self._controller = Controller(_Handler(self), hostname="127.0.0.1", port=port, **auth,
                                      **tls)

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str,
                      auth_data: Any) -> AuthResult:
        self.auth_over_tls.append(session.ssl is not None)
        # DESIGN.md §7: a failing authenticator must say handled=False or the client hangs.
        if isinstance(auth_data, LoginPassword) and (
            auth_data.login.decode() == self._username
            and auth_data.password.decode() == self._password
        ):
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def start(self) -> FakeSmtp:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    @property
    def port(self) -> int:
        return int(self._controller.port)

    @property
    def url(self) -> str:
        credentials = f"{self._username}:{self._password}@" if self._username else ""
        plain_auth = "?allow_plain_auth=true" if self._username and not self.starttls else ""
        return f"smtp://{credentials}127.0.0.1:{self.port}{plain_auth}"

    def script(self, recipient: str, codes: list[int], stage: str = "data") -> None:
        """Reply with these codes (in order) to the next deliveries to ``recipient``."""
        with self._lock:
            self._scripts[recipient.lower()].extend((code, stage) for code in codes)

    def _next_reply(self, recipient: str, *, stage: str) -> int | None:
        with self._lock:
            queue = self._scripts.get(recipient.lower())
            if queue and queue[0][1] == stage:
                return queue.popleft()[0]
        return None

    def count_by_recipient(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        with self._lock:
            for received in self.received:
                for recipient in received.recipients:
                    counts[recipient.lower()] += 1
        return dict(counts)

    def to(self, recipient: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if recipient.lower() in
                    (x.lower() for x in r.recipients)]
