"""A fake APNs provider API: HTTP/2 over TLS (ALPN ``h2``) on 127.0.0.1, in a thread.

It checks what Apple checks, as far as a test can observe it
(https://developer.apple.com/documentation/usernotifications/sending-notification-requests-to-apns,
https://developer.apple.com/documentation/usernotifications/handling-notification-responses-from-apns):

- token auth: ``authorization: bearer <jwt>``, ES256, header ``kid`` a registered key id,
  claim ``iss`` that key's team, ``iat`` no older than an hour, signature verified with the
  public half of the registered ``.p8`` key → 403 ``InvalidProviderToken`` /
  ``ExpiredProviderToken`` / ``MissingProviderToken``;
- certificate auth: a TLS client certificate signed by the test CA (the handshake fails
  otherwise), recorded on each request;
- ``:method`` POST (405 ``MethodNotAllowed``), ``:path`` ``/3/device/<hex token>``
  (404 ``BadPath`` / 400 ``BadDeviceToken``), ``apns-topic`` present (``MissingTopic``) and one
  of :attr:`FakeApns.topics` (``DeviceTokenNotForTopic``), ``apns-id`` a UUID
  (``BadMessageId``), ``apns-priority`` 1/5/10 (``BadPriority``), ``apns-expiration`` an
  integer (``BadExpirationDate``), ``apns-collapse-id`` ≤ 64 bytes (``BadCollapseId``),
  ``apns-push-type`` known (``InvalidPushType``), a non-empty payload (``PayloadEmpty``) within
  4 KB, 5 KB for VoIP (413 ``PayloadTooLarge``).

Requests that pass are answered from a script, else 200. Every request is recorded.

    with FakeApns(bundle_id="com.example.app") as fake:       # started; fake.url
        key_pem = fake.new_token_key(key_id="KEY1234567", team_id="TEAM123456")
        fake.script(token, [Reply(410, "Unregistered"), Reply(200)])
        fake.script(None, [Reply(429, "TooManyRequests", retry_after=3)])   # any token
        fake.script(token, [HANG])                             # never answers
        fake.script(token, [SHUTDOWN])                         # GOAWAY, connection closed
        ... send with Settings(apns_url=fake.url, ca_bundle=fake.ca_path) ...
        [request] = fake.requests      # RecordedRequest: headers, token, payload, jwt_claims…

Flow control is real HTTP/2 flow control: response bodies wait for the client's window, so a
client that never returns credit stalls here as it would against Apple.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import ssl
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import ProtocolError, StreamClosedError
from h2.settings import SettingCodes

from tests.fakes.tls import CertificateAuthority, default_ca

PAYLOAD_LIMIT = 4096
VOIP_PAYLOAD_LIMIT = 5120
PUSH_TYPES = frozenset(
    {
        "alert",
        "background",
        "location",
        "voip",
        "complication",
        "fileprovider",
        "mdm",
        "liveactivity",
        "pushtotalk",
        "widgets",
        "controls",
    }
)
TOKEN_MAX_AGE_S = 3600
_HEX = re.compile(r"[0-9a-fA-F]+")


@dataclass(frozen=True)
class Reply:
    """One scripted answer. ``reason`` becomes the JSON body ``{"reason": ...}`` (410 answers
    also carry Apple's ``timestamp``); ``body`` replaces that body verbatim; ``hang`` never
    answers; ``delay`` answers late; ``goaway`` closes the connection instead of answering,
    as APNs does when it shuts down (GOAWAY naming ``reason``, this stream not processed)."""

    status: int = 200
    reason: str | None = None
    retry_after: float | None = None
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes | None = None
    hang: bool = False
    delay: float = 0.0
    goaway: bool = False

    def encoded_body(self) -> bytes:
        if self.body is not None:
            return self.body
        if self.reason is None:
            return b""
        document: dict[str, Any] = {"reason": self.reason}
        if self.status == 410:
            document["timestamp"] = int(time.time() * 1000)
        return json.dumps(document).encode()


HANG = Reply(hang=True)
SHUTDOWN = Reply(503, "Shutdown", goaway=True)

ReplyLike = Reply | tuple[int, str | None] | str


def _as_reply(item: ReplyLike) -> Reply:
    if isinstance(item, Reply):
        return item
    if item == "hang":
        return HANG
    if isinstance(item, tuple):
        status, reason = item
        return Reply(status, reason)
    raise TypeError(f"not a reply: {item!r}")


@dataclass(frozen=True)
class RecordedRequest:
    """What the fake received, and what it answered (``status`` None: it hung)."""

    method: str
    path: str
    token: str | None
    headers: dict[str, str]
    body: bytes
    payload: Any  # the decoded JSON body, None when it is not JSON
    received_at: float
    connection: int  # 1 for the first connection the fake accepted, 2 for the next, ...
    client_cert: dict[str, Any] | None
    jwt_header: dict[str, Any] | None
    jwt_claims: dict[str, Any] | None  # set only when the signature verified
    status: int | None = None
    reason: str | None = None


@dataclass(frozen=True)
class _TokenKey:
    team_id: str
    public_key: ec.EllipticCurvePublicKey


def make_token_key() -> str:
    """A fresh APNs auth key as Apple hands it out: EC P-256, PKCS#8 PEM (the ``.p8`` file)."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def make_client_cert(
    bundle_id: str, ca: CertificateAuthority | None = None, *, days: float = 2
) -> tuple[str, str]:
    """An APNs-style client certificate for ``bundle_id`` (subject UID = bundle id), signed by
    ``ca`` (default: the shared test CA). Returns ``(certificate_pem, private_key_pem)``."""
    ca = ca or default_ca()
    return ca.issue_client_cert(f"Apple Push Services: {bundle_id}", uid=bundle_id, days=days)


class FakeApns:
    """A fake APNs server. ``start()`` returns its base URL ``https://127.0.0.1:PORT``."""

    def __init__(
        self,
        bundle_id: str = "com.example.herald",
        *,
        ca: CertificateAuthority | None = None,
        max_concurrent_streams: int = 1000,
        initial_window_size: int | None = None,
    ) -> None:
        self.bundle_id = bundle_id
        # Topics the registered device tokens belong to; anything else is
        # DeviceTokenNotForTopic. Tests may add to it.
        self.topics: set[str] = {bundle_id, f"{bundle_id}.voip"}
        self.ca = ca or default_ca()
        self.max_concurrent_streams = max_concurrent_streams
        self.initial_window_size = initial_window_size
        self.url = ""
        self.port = 0
        self._files = self.ca.issue_server_files()
        # Re-entrant: a responder (called under the lock) may read fake.requests.
        self._lock = threading.RLock()
        self._arrived = threading.Condition(self._lock)
        self._requests: list[RecordedRequest] = []
        self._scripts: dict[str | None, deque[Reply]] = {}
        self._responder: Callable[[RecordedRequest], Reply | None] | None = None
        self._token_keys: dict[str, _TokenKey] = {}
        self._connections = 0
        self._response_bytes = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._live: set[_Connection] = set()

    # -- set-up ---------------------------------------------------------------------------

    @property
    def ca_path(self) -> Path:
        """The CA to trust (``Settings.ca_bundle``)."""
        return self.ca.ca_path

    def register_token_key(self, key_id: str, team_id: str, key_pem: str) -> None:
        """Accept provider tokens signed by ``key_pem`` with ``kid=key_id``, ``iss=team_id``."""
        private = serialization.load_pem_private_key(key_pem.encode(), password=None)
        if not isinstance(private, ec.EllipticCurvePrivateKey):
            raise TypeError("an APNs auth key is an EC P-256 key")
        with self._lock:
            self._token_keys[key_id] = _TokenKey(team_id, private.public_key())

    def new_token_key(self, key_id: str = "KEY1234567", team_id: str = "TEAM123456") -> str:
        """Generate and register a ``.p8`` key; returns its PEM text."""
        key_pem = make_token_key()
        self.register_token_key(key_id, team_id, key_pem)
        return key_pem

    def script(self, token: str | None, replies: Iterable[ReplyLike]) -> None:
        """Queue answers for ``token`` (``None``: for any token without a queue of its own).
        Items are :class:`Reply`, ``(status, reason)`` or ``"hang"``; once a queue is empty,
        valid requests get 200."""
        with self._lock:
            self._scripts.setdefault(token, deque()).extend(_as_reply(r) for r in replies)

    def respond_with(self, responder: Callable[[RecordedRequest], Reply | None] | None) -> None:
        """Decide answers with a function (called in the fake's thread) when no script
        applies; returning None means 200."""
        with self._lock:
            self._responder = responder

    # -- observation ------------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def connections(self) -> int:
        """How many TLS connections the fake has accepted."""
        with self._lock:
            return self._connections

    @property
    def response_bytes(self) -> int:
        """Response body bytes (HTTP/2 DATA, the flow-controlled part) sent so far."""
        with self._lock:
            return self._response_bytes

    def wait_for_requests(self, count: int, timeout: float = 5.0) -> list[RecordedRequest]:
        """Block until at least ``count`` requests arrived; returns them."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self._requests) >= count, timeout):
                raise TimeoutError(f"{len(self._requests)} of {count} requests arrived")
            return list(self._requests)

    def clear(self) -> None:
        """Forget recorded requests, scripts and the responder (registered keys stay)."""
        with self._lock:
            self._requests.clear()
            self._scripts.clear()
            self._responder = None

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> str:
        if self._thread is not None:
            return self.url
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="fake-apns", daemon=True)
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._serve(), loop).result(timeout=10)
        self.url = f"https://127.0.0.1:{self.port}"
        return self.url

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        self._loop = self._thread = None

    def __enter__(self) -> FakeApns:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    async def _serve(self) -> int:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self._files.cert_path, self._files.key_path)
        context.set_alpn_protocols(["h2"])
        # Certificate auth: a client certificate is optional (token auth sends none), but one
        # that is presented must chain to the test CA.
        context.verify_mode = ssl.CERT_OPTIONAL
        context.load_verify_locations(cafile=str(self.ca.ca_path))
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: _Connection(self), "127.0.0.1", 0, ssl=context
        )
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self._live):
            connection.abort()
        current = asyncio.current_task()
        for task in asyncio.all_tasks():
            if task is not current:
                task.cancel()

    # -- request handling (fake's thread) -----------------------------------------------------

    def _accepted(self) -> int:
        with self._lock:
            self._connections += 1
            return self._connections

    def _sent_body(self, size: int) -> None:
        with self._lock:
            self._response_bytes += size

    def _handle(self, request: RecordedRequest) -> tuple[RecordedRequest, Reply]:
        """Validate, pick the answer, record. Returns the recorded request and the answer."""
        with self._lock:
            verdict = self._validate(request)
            if verdict is None:
                queue = self._scripts.get(request.token) or self._scripts.get(None)
                if queue:
                    verdict = queue.popleft()
                elif self._responder is not None:
                    verdict = self._responder(request) or Reply(200)
                else:
                    verdict = Reply(200)
            recorded = RecordedRequest(
                **{
                    **request.__dict__,
                    "status": None if verdict.hang else verdict.status,
                    "reason": verdict.reason,
                }
            )
            self._requests.append(recorded)
            self._arrived.notify_all()
            return recorded, verdict

    def _validate(self, request: RecordedRequest) -> Reply | None:
        headers = request.headers
        auth_error = self._check_auth(request)
        if auth_error is not None:
            return Reply(403, auth_error)
        if request.method != "POST":
            return Reply(405, "MethodNotAllowed")
        if request.token is None:
            return Reply(404, "BadPath")
        if not request.token:
            return Reply(400, "MissingDeviceToken")
        if not _HEX.fullmatch(request.token):
            return Reply(400, "BadDeviceToken")
        topic = headers.get("apns-topic")
        if not topic:
            return Reply(400, "MissingTopic")
        if topic not in self.topics:
            return Reply(400, "DeviceTokenNotForTopic")
        apns_id = headers.get("apns-id")
        if apns_id is not None:
            try:
                uuid.UUID(apns_id)
            except ValueError:
                return Reply(400, "BadMessageId")
        if headers.get("apns-priority", "10") not in ("1", "5", "10"):
            return Reply(400, "BadPriority")
        expiration = headers.get("apns-expiration")
        if expiration is not None and not expiration.isdigit():
            return Reply(400, "BadExpirationDate")
        collapse_id = headers.get("apns-collapse-id")
        if collapse_id is not None and len(collapse_id.encode()) > 64:
            return Reply(400, "BadCollapseId")
        push_type = headers.get("apns-push-type", "alert")
        if push_type not in PUSH_TYPES:
            return Reply(400, "InvalidPushType")
        if not request.body:
            return Reply(400, "PayloadEmpty")
        limit = VOIP_PAYLOAD_LIMIT if push_type == "voip" else PAYLOAD_LIMIT
        if len(request.body) > limit:
            return Reply(413, "PayloadTooLarge")
        return None

    def _check_auth(self, request: RecordedRequest) -> str | None:
        if request.jwt_header is None:
            if request.client_cert:
                return None
            return "MissingProviderToken"
        key = self._token_keys.get(str(request.jwt_header.get("kid")))
        if request.jwt_claims is None or key is None:
            return "InvalidProviderToken"
        if request.jwt_claims.get("iss") != key.team_id:
            return "InvalidProviderToken"
        issued_at = request.jwt_claims.get("iat")
        if not isinstance(issued_at, int):
            return "InvalidProviderToken"
        if issued_at < time.time() - TOKEN_MAX_AGE_S:
            return "ExpiredProviderToken"
        return None

    def _verify_jwt(self, authorization: str | None) -> tuple[dict[str, Any] | None, Any]:
        """``(header, claims)``; claims only when the signature verifies with the key the
        header names. The policy checks (issuer, age) are in :meth:`_check_auth`."""
        if not authorization:
            return None, None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token:
            return {}, None
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return {}, None
        with self._lock:
            key = self._token_keys.get(str(header.get("kid")))
        if key is None or header.get("alg") != "ES256":
            return header, None
        try:
            claims = jwt.decode(
                token,
                key.public_key,
                algorithms=["ES256"],
                options={"verify_exp": False, "verify_iat": False, "require": ["iss", "iat"]},
            )
        except jwt.PyJWTError:
            return header, None
        return header, claims


@dataclass
class _Stream:
    headers: dict[str, str]
    body: bytearray = field(default_factory=bytearray)
    outbound: bytes = b""
    answering: bool = False


class _Connection(asyncio.Protocol):
    """One client connection: h2 server side, driven by asyncio callbacks."""

    def __init__(self, fake: FakeApns) -> None:
        self.fake = fake
        self.transport: asyncio.Transport | None = None
        self.h2 = H2Connection(H2Configuration(client_side=False, header_encoding="utf-8"))
        self.streams: dict[int, _Stream] = {}
        self.number = 0
        self.client_cert: dict[str, Any] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            transport.close()  # Apple speaks HTTP/2 only
            return
        self.client_cert = ssl_object.getpeercert() or None
        self.number = self.fake._accepted()
        self.fake._live.add(self)
        self.h2.initiate_connection()
        settings: dict[SettingCodes | int, int] = {
            SettingCodes.MAX_CONCURRENT_STREAMS: self.fake.max_concurrent_streams
        }
        if self.fake.initial_window_size is not None:
            settings[SettingCodes.INITIAL_WINDOW_SIZE] = self.fake.initial_window_size
        self.h2.update_settings(settings)
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.fake._live.discard(self)
        self.streams.clear()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def flush(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(self.h2.data_to_send())

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except ProtocolError:
            self.flush()
            self.abort()
            return
        for event in events:
            if isinstance(event, RequestReceived):
                self.streams[event.stream_id] = _Stream(
                    {str(k): str(v) for k, v in (event.headers or [])}
                )
            elif isinstance(event, DataReceived):
                stream = self.streams.get(event.stream_id)
                if stream is not None and event.data:
                    stream.body.extend(event.data)
                # The fake returns credit as a server should; it is the client under test
                # that must do the same for response bodies.
                self.h2.acknowledge_received_data(
                    event.flow_controlled_length or 0, event.stream_id
                )
            elif isinstance(event, StreamEnded):
                stream = self.streams.get(event.stream_id)
                if stream is not None and not stream.answering:
                    stream.answering = True
                    asyncio.get_running_loop().create_task(self.answer(event.stream_id))
            elif isinstance(event, StreamReset):
                self.streams.pop(event.stream_id, None)
            elif isinstance(event, WindowUpdated | RemoteSettingsChanged):
                self.pump()
            elif isinstance(event, ConnectionTerminated):
                self.flush()
                if self.transport is not None:
                    self.transport.close()
                return
        self.flush()

    def _request(self, stream: _Stream) -> RecordedRequest:
        headers = stream.headers
        path = headers.get(":path", "")
        token = path[len("/3/device/") :] if path.startswith("/3/device/") else None
        body = bytes(stream.body)
        try:
            payload = json.loads(body) if body else None
        except ValueError:
            payload = None
        jwt_header, jwt_claims = self.fake._verify_jwt(headers.get("authorization"))
        return RecordedRequest(
            method=headers.get(":method", ""),
            path=path,
            token=token,
            headers=dict(headers),
            body=body,
            payload=payload,
            received_at=time.time(),
            connection=self.number,
            client_cert=self.client_cert,
            jwt_header=jwt_header,
            jwt_claims=jwt_claims,
        )

    async def answer(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            return
        recorded, reply = self.fake._handle(self._request(stream))
        if reply.hang:
            return
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if self.streams.get(stream_id) is not stream or self.transport is None:
            return  # reset by the client or connection gone
        if reply.goaway:
            self.h2.close_connection(
                last_stream_id=max(0, stream_id - 2),
                additional_data=json.dumps({"reason": reply.reason or "Shutdown"}).encode(),
            )
            self.flush()
            self.transport.close()
            return
        response_headers = [
            (":status", str(reply.status)),
            ("apns-id", recorded.headers.get("apns-id") or str(uuid.uuid4())),
        ]
        if reply.retry_after is not None:
            response_headers.append(("retry-after", f"{reply.retry_after:g}"))
        response_headers.extend(reply.headers)
        body = reply.encoded_body()
        if body:
            response_headers.append(("content-type", "application/json"))
            response_headers.append(("content-length", str(len(body))))
        try:
            self.h2.send_headers(stream_id, response_headers, end_stream=not body)
        except (ProtocolError, StreamClosedError):
            self.streams.pop(stream_id, None)
            return
        if body:
            stream.outbound = body
            self.pump()
        else:
            self.streams.pop(stream_id, None)
        self.flush()

    def pump(self) -> None:
        """Send queued response bodies as far as the client's flow-control windows allow."""
        for stream_id, stream in list(self.streams.items()):
            if not stream.outbound:
                continue
            try:
                while stream.outbound:
                    window = self.h2.local_flow_control_window(stream_id)
                    size = min(window, self.h2.max_outbound_frame_size, len(stream.outbound))
                    if size <= 0:
                        break
                    chunk, stream.outbound = stream.outbound[:size], stream.outbound[size:]
                    self.h2.send_data(stream_id, chunk, end_stream=not stream.outbound)
                    self.fake._sent_body(size)
            except (ProtocolError, StreamClosedError):
                stream.outbound = b""
            if not stream.outbound:
                self.streams.pop(stream_id, None)
        self.flush()
