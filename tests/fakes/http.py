"""The threaded servers the protocol fakes build on.

:class:`FakeServer` is the life cycle of a fake that serves on 127.0.0.1 from its own thread
(the SMSC's too): ``start()`` on a free port, ``stop()`` dropping open connections so a client
sees the provider vanish, and a ``stopping`` event hanging answers wait on. :class:`Scripts`
holds scripted answers per address. :class:`FakeHttpServer` is the HTTP(S) server of the FCM,
ADM, Baidu and Twilio fakes: it records every request and answers through ``handle``.

    class FakeThing(FakeHttpServer):
        def fail(self, device: str, status: int) -> None:
            self.script(device, lambda request: Reply(status, {"error": "scripted"}))

        def handle(self, request: RecordedRequest) -> Reply:
            device = request.path.rsplit("/", 1)[-1]
            return self._scripted(device, request) or Reply(200, {"ok": True})
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, Generic, Self, TypeVar
from urllib.parse import parse_qs

from tests.fakes.tls import TlsFiles, default_ca

# How long a hanging answer holds its connection if nobody stops the fake.
HANG_S = 60.0

Answer = TypeVar("Answer")


def unused_port() -> int:
    """A port on 127.0.0.1 nobody listens on: connecting to it is refused."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def retry_after_header(seconds: float | str | None) -> dict[str, str]:
    """The ``Retry-After`` header of a scripted answer, if it has one."""
    if seconds is None:
        return {}
    return {"Retry-After": seconds if isinstance(seconds, str) else f"{seconds:g}"}


@dataclass
class _Script(Generic[Answer]):
    answer: Answer
    times: int | None  # None: every time


class Scripts(Generic[Answer]):
    """Scripted answers per address, ``None`` standing for any address without a script of
    its own. Each is given ``times`` times, or every time when ``times`` is None."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queues: dict[str | None, list[_Script[Answer]]] = {}

    def add(self, address: str | None, answer: Answer, times: int | None = None) -> None:
        with self._lock:
            self._queues.setdefault(address, []).append(_Script(answer, times))

    def take(self, address: str | None) -> Answer | None:
        with self._lock:
            for key in (address, None):
                queue = self._queues.get(key)
                if queue:
                    script = queue[0]
                    if script.times is not None:
                        script.times -= 1
                        if script.times <= 0:
                            queue.pop(0)
                    return script.answer
        return None

    def clear(self) -> None:
        with self._lock:
            self._queues.clear()


class ThreadedTcpServer(socketserver.ThreadingTCPServer):
    """The server under a fake: its threads neither outlive the process nor delay ``stop()``."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128  # the default 5 drops concurrent connects (1 s SYN retransmit)


class FakeServer:
    """A fake provider on 127.0.0.1, served from its own thread; a context manager.

    A subclass makes its ``socketserver`` server in ``_make_server`` and says in ``url`` how a
    client addresses it; its handlers ``_track`` the connections they serve.
    """

    def __init__(self) -> None:
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._connections: list[socket.socket] = []
        self._server: ThreadedTcpServer | None = None
        self._thread: threading.Thread | None = None
        self._port = 0  # kept after stop: a test may point a client at the vanished fake

    def _make_server(self) -> ThreadedTcpServer:
        raise NotImplementedError

    @property
    def url(self) -> str:
        raise NotImplementedError

    @property
    def port(self) -> int:
        assert self._port, f"{type(self).__name__} is not started"
        return self._port

    def start(self) -> str:
        self.stopping.clear()
        server = self._make_server()
        self._server = server
        self._port = int(server.server_address[1])
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self.stopping.set()  # lets hanging answers go
        self.drop_connections()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def drop_connections(self) -> None:
        """Cut every open connection, as a provider restart would."""
        with self._lock:
            connections, self._connections = self._connections, []
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def _track(self, connection: socket.socket) -> None:
        with self._lock:
            self._connections.append(connection)

    def _forget(self, connection: socket.socket) -> None:
        with self._lock, contextlib.suppress(ValueError):
            self._connections.remove(connection)


# --- HTTP ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str  # path and query, as sent
    headers: dict[str, str]  # lower-case names
    body: bytes
    url: str  # scheme://host:port/path as the client addressed it (Host header)

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode(), keep_blank_values=True).items()}


@dataclass
class Reply:
    status: int
    body: Any = None  # dict/list → JSON, bytes/str → as is
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0  # answer this late (a "hang" when longer than the client waits)
    hang: bool = False  # never answer: hold the connection until the fake stops

    def encoded(self) -> tuple[bytes, dict[str, str]]:
        headers = dict(self.headers)
        if isinstance(self.body, bytes):
            raw = self.body
        elif isinstance(self.body, str):
            raw = self.body.encode()
        elif self.body is None:
            raw = b""
        else:
            raw = json.dumps(self.body).encode()
            headers.setdefault("Content-Type", "application/json; charset=UTF-8")
        return raw, headers


class _HttpServer(ThreadedTcpServer, HTTPServer):
    fake: FakeHttpServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One write per response and no Nagle: otherwise delayed ACKs add ~40 ms to every request.
    wbufsize = 1 << 16
    disable_nagle_algorithm = True
    server: _HttpServer

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection)

    def finish(self) -> None:
        self.server.fake._forget(self.connection)
        super().finish()

    def do_POST(self) -> None:
        self._dispatch()

    def do_GET(self) -> None:
        self._dispatch()

    def _dispatch(self) -> None:
        fake = self.server.fake
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in self.headers.items()}
        request = fake.request_type(
            method=self.command,
            path=self.path,
            headers=headers,
            body=body,
            url=f"{fake.scheme}://{headers.get('host', '')}{self.path.split('?')[0]}",
        )
        fake._record(request)
        try:
            reply = fake.handle(request)
        except Exception as exc:  # a bug in the fake: make it loud in the test
            fake.crashes.append(exc)
            reply = Reply(599, {"fake crashed": repr(exc)})
        if reply.hang or reply.delay_s:
            stopped = fake.stopping.wait(HANG_S if reply.hang else reply.delay_s)
            if stopped or reply.hang:
                self.close_connection = True
                return
        raw, reply_headers = reply.encoded()
        self.send_response(reply.status)
        for name, value in reply_headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)
        self.wfile.flush()

    def log_message(self, format: str, *args: Any) -> None:
        pass


class FakeHttpServer(FakeServer):
    """An HTTP(S) fake that records requests and answers via ``handle``.

    ``tls=True`` serves a certificate from the shared test CA (:func:`default_ca`), whose PEM
    is at ``ca_path`` (give it to ``HERALD_CA_BUNDLE``); or pass the :class:`TlsFiles` to serve.
    Scripts are per address (``script``); a subclass answers from them with ``_scripted``.
    """

    request_type: type[RecordedRequest] = RecordedRequest

    def __init__(self, *, tls: bool | TlsFiles = False) -> None:
        super().__init__()
        self._tls = default_ca().issue_server_files() if tls is True else tls or None
        self.scheme = "https" if self._tls else "http"
        self.ca_path: Path | None = self._tls.ca_path if self._tls else None
        self.crashes: list[BaseException] = []
        self._requests: list[RecordedRequest] = []
        self._scripts: Scripts[Callable[[RecordedRequest], Reply]] = Scripts()

    def _make_server(self) -> ThreadedTcpServer:
        server = _HttpServer(("127.0.0.1", 0), _Handler)
        server.fake = self
        if self._tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(self._tls.cert_path, self._tls.key_path)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        return server

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    base_url = url  # the name the push fakes' tests and settings use

    def reset(self) -> None:
        """Forget recorded requests and scripts."""
        self._scripts.clear()
        with self._lock:
            self._requests.clear()

    # -- records --

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_to(self, path_fragment: str) -> list[RecordedRequest]:
        return [r for r in self.requests if path_fragment in r.path]

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    # -- scripting --

    def script(
        self,
        address: str | None,
        make: Callable[[RecordedRequest], Reply],
        times: int | None = None,
    ) -> None:
        """Answer requests for ``address`` (None: any) with ``make(request)``."""
        self._scripts.add(address, make, times)

    def _scripted(self, address: str | None, request: RecordedRequest) -> Reply | None:
        make = self._scripts.take(address)
        return None if make is None else make(request)

    def handle(self, request: RecordedRequest) -> Reply:
        raise NotImplementedError
