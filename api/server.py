"""What ``herald api`` and ``herald serve`` ask of uvicorn, so one slow or hostile client cannot
hold a process's connections.

uvicorn closes idle keep-alive connections (``timeout_keep_alive``), answers 503 past a
connection cap (``limit_concurrency``) and bounds a request head's size
(``h11_max_incomplete_event_size``, httptools' own limit otherwise), but it waits forever for a
request head that trickles in. :class:`HeadDeadlineProtocol` closes a connection whose request
line and headers have not all arrived within ``HERALD_HEAD_TIMEOUT_S`` of it opening (or of
the previous response). The body is bounded by the app (``HERALD_BODY_TIMEOUT_S``, read only
after the signature headers check out).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from worker.core.config import Settings, get_settings

MAX_HEAD_BYTES = 32 * 1024  # boto3's heads are well under 2 KiB


class HeadDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline on receiving each request head."""

    _head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_deadline()

    def on_headers_complete(self) -> None:
        self._disarm_head_deadline()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # Not while a pipelined request, whose head has arrived, is now being answered.
        if not self.transport.is_closing() and not self._answering():
            self._arm_head_deadline()

    def _answering(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_deadline()
        super().connection_lost(exc)

    def _arm_head_deadline(self) -> None:
        self._disarm_head_deadline()
        self._head_deadline = self.loop.call_later(
            get_settings().head_timeout_s, self._head_too_slow
        )

    def _disarm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if not self.transport.is_closing() and not self._answering():
            self.transport.close()


def uvicorn_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run``: the limits above, from the settings."""
    return {
        "http": "api.server:HeadDeadlineProtocol",
        "timeout_keep_alive": settings.keep_alive_s,
        "limit_concurrency": settings.max_connections,
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
        "log_level": "warning",
    }
