"""The HTTP/2 connection to APNs: aioapns' client protocol, fixed where it traps us."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from aioapns.connection import (
    APNsBaseClientProtocol,
    APNsTLSClientProtocol,
    AuthorizationHeaderProvider,
)
from aioapns.exceptions import ConnectionClosed
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import ProtocolError

from worker.providers.apns.payload import ApnsRequest

logger = logging.getLogger("worker.providers.apns")

# --- HTTP/2 --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApnsResponse:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class _Exchange:
    """A request in flight on one HTTP/2 stream."""

    waiter: asyncio.Future[ApnsResponse]
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)


def _str(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


class ApnsProtocol(APNsTLSClientProtocol):
    """aioapns' client protocol with the traps of DESIGN.md §7 fixed (see module docstring).

    Requests go through :meth:`exchange`, not aioapns' ``send_notification``: responses are
    matched by stream id, keep their headers and bodies, and every received DATA frame is
    acknowledged so the peer's send window never runs dry.
    """

    AUTHORITY = "api.push.apple.com"

    def __init__(
        self,
        apns_topic: str,
        loop: asyncio.AbstractEventLoop,
        on_connection_lost: Callable[[APNsBaseClientProtocol], None],
        auth_provider: AuthorizationHeaderProvider | None,
    ) -> None:
        super().__init__(apns_topic, loop, cast(Any, on_connection_lost), auth_provider)
        self._exchanges: dict[int, _Exchange] = {}
        self._window_open = asyncio.Event()
        self._draining = False  # GOAWAY received: no new streams
        self._lost = False
        self.closed = asyncio.Event()  # set once the transport is gone

    @property
    def is_busy(self) -> bool:
        return self._draining or self._lost or self.free_channels.is_busy

    async def exchange(self, request: ApnsRequest) -> ApnsResponse:
        try:
            stream_id = await self.free_channels.acquire()
        except ProtocolError as exc:  # stream ids used up: this connection is done
            self._draining = True
            raise ConnectionClosed(f"HTTP/2 error: {exc}") from exc
        waiter: asyncio.Future[ApnsResponse] = self.loop.create_future()
        self._exchanges[stream_id] = _Exchange(waiter)
        try:
            if self._draining or self._lost:
                raise ConnectionClosed("the connection is closing")
            headers = [
                (":method", "POST"),
                (":scheme", "https"),
                (":path", f"/3/device/{request.token}"),
                (":authority", self.AUTHORITY),
                *request.headers,
            ]
            if self.auth_provider is not None:
                headers.append(("authorization", self.auth_provider.get_header()))
            self.conn.send_headers(stream_id, headers)
            await self._send_body(stream_id, request.body)
            return await waiter
        except ProtocolError as exc:
            raise ConnectionClosed(f"HTTP/2 error: {exc}") from exc
        finally:
            if self._exchanges.pop(stream_id, None) is not None:
                # Given up on (timeout) or failed: cancel the stream so neither side keeps
                # it, and give its slot back.
                if not self._lost:
                    with contextlib.suppress(ProtocolError):
                        self.conn.reset_stream(stream_id, ErrorCodes.CANCEL)
                    self.flush()
                self.free_channels.release()

    async def _send_body(self, stream_id: int, body: bytes) -> None:
        """Send ``body`` as the peer's flow-control windows allow."""
        while True:
            if self._lost:
                raise ConnectionClosed("connection lost")
            size = min(
                self.conn.local_flow_control_window(stream_id),
                self.conn.max_outbound_frame_size,
            )
            if len(body) <= size:
                self.conn.send_data(stream_id, body, end_stream=True)
                self.flush()
                return
            if size > 0:
                self.conn.send_data(stream_id, body[:size])
                body = body[size:]
                self.flush()
            self._window_open.clear()
            await self._window_open.wait()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except ProtocolError as exc:
            logger.warning("APNs connection broke the HTTP/2 protocol: %s", exc)
            self._fail_all(ConnectionClosed(f"HTTP/2 error: {exc}"))
            self.close()
            return
        for event in events:
            if isinstance(event, ResponseReceived):
                exchange = self._exchanges.get(event.stream_id or 0)
                if exchange is not None:
                    exchange.headers = {_str(k): _str(v) for k, v in event.headers or ()}
                    exchange.status = int(exchange.headers.get(":status") or 0)
            elif isinstance(event, DataReceived):
                stream_id = event.stream_id or 0
                # The fix for aioapns 4.0: hand the bytes back to the peer's send window.
                # Without it the connection-wide window (65,535 bytes) only shrinks, and
                # once error bodies have used it up APNs can send no response body at all.
                self.conn.acknowledge_received_data(event.flow_controlled_length or 0, stream_id)
                exchange = self._exchanges.get(stream_id)
                if exchange is not None and event.data:
                    exchange.body.extend(event.data)
            elif isinstance(event, StreamEnded):
                self._finish(event.stream_id or 0)
            elif isinstance(event, StreamReset):
                self._finish(
                    event.stream_id or 0,
                    ConnectionClosed(f"APNs reset the stream ({event.error_code!s})"),
                )
            elif isinstance(event, RemoteSettingsChanged):
                self.on_remote_settings_changed(cast(Any, event.changed_settings))
                self._window_open.set()  # INITIAL_WINDOW_SIZE may have grown
            elif isinstance(event, WindowUpdated):
                self._window_open.set()
            elif isinstance(event, ConnectionTerminated):
                self._goaway(event)
            # Pings are answered by h2 itself; other events need nothing.
        self.flush()

    def _finish(self, stream_id: int, error: Exception | None = None) -> None:
        exchange = self._exchanges.pop(stream_id, None)
        if exchange is None:
            return
        self.free_channels.release()
        if not exchange.waiter.done():
            if error is not None:
                exchange.waiter.set_exception(error)
            else:
                exchange.waiter.set_result(
                    ApnsResponse(exchange.status, exchange.headers, bytes(exchange.body))
                )
        if self._draining and not self._exchanges:
            self.close()

    def _goaway(self, event: ConnectionTerminated) -> None:
        """APNs is closing the connection (GOAWAY, e.g. ``{"reason": "Shutdown"}``). h2 takes
        no frame after a GOAWAY, so no stream on it can still be answered: all fail now and
        the pool opens a new connection for the next request."""
        self._draining = True
        detail = _str(event.additional_data or b"") or str(event.error_code)
        logger.info("APNs closed a connection: %s", detail)
        for stream_id in list(self._exchanges):
            self._finish(stream_id, ConnectionClosed(f"APNs closed the connection: {detail}"))
        self.close()

    def _fail_all(self, error: Exception) -> None:
        for exchange in self._exchanges.values():
            if not exchange.waiter.done():
                exchange.waiter.set_exception(error)

    def flush(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            super().flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost = True
        super().connection_lost(exc)
        self._fail_all(ConnectionClosed(f"connection lost: {exc}" if exc else "connection closed"))
        self._window_open.set()
        self.closed.set()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


@functools.lru_cache(maxsize=64)
def protocol_for(host: str, port: int) -> type[ApnsProtocol]:
    """aioapns reads the server from class attributes; one subclass per configured URL."""
    authority = f"[{host}]" if ":" in host else host
    if port != 443:
        authority = f"{authority}:{port}"

    class Protocol(ApnsProtocol):
        APNS_SERVER = host
        APNS_PORT = port
        AUTHORITY = authority

    Protocol.__name__ = Protocol.__qualname__ = f"ApnsProtocol[{authority}]"
    return Protocol
