"""Result wake-ups: workers say "request R has new outcomes"; the API process waiting for R
wakes and reads them from the database.

With ``HERALD_REDIS_URL`` (or a Redis broker) this is Redis pub/sub, one shared subscription
per API process; in the embedded mode it is an in-process event. A lost wake-up costs at most
the waiter's fallback re-check interval, never a result: outcomes live in the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator

import redis
import redis.asyncio as aioredis
import structlog

from worker.core.outages import REDIS

CHANNEL_PREFIX = "herald:done:"
log = structlog.get_logger("herald.notify")


def redis_publisher(url: str) -> Callable[[str], None]:
    client = redis.Redis.from_url(url)

    def publish(request_id: str) -> None:
        try:
            client.publish(CHANNEL_PREFIX + request_id, b"1")
        except redis.RedisError as exc:  # the waiter's periodic re-check covers a lost wake-up
            REDIS.lost(exc)
            return
        REDIS.back()

    return publish


class Waiters:
    """Per-request asyncio events on one loop, settable from any thread."""

    def __init__(self) -> None:
        self._events: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    @contextlib.contextmanager
    def watching(self, request_id: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        with self._lock:
            self._events[request_id].add(event)
        try:
            yield event
        finally:
            with self._lock:
                events = self._events.get(request_id)
                if events is not None:
                    events.discard(event)
                    if not events:
                        del self._events[request_id]

    def wake(self, request_id: str) -> None:
        with self._lock:
            events = list(self._events.get(request_id, ()))
        if events and self._loop is not None:
            for event in events:
                self._loop.call_soon_threadsafe(event.set)


class RedisListener:
    """One pattern subscription per process feeding :class:`Waiters`."""

    def __init__(self, url: str, waiters: Waiters) -> None:
        self._url = url
        self._waiters = waiters
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            try:
                client = aioredis.Redis.from_url(self._url)
                async with client.pubsub() as pubsub:
                    await pubsub.psubscribe(CHANNEL_PREFIX + "*")
                    REDIS.back()
                    async for message in pubsub.listen():
                        if message.get("type") == "pmessage":
                            channel = message["channel"]
                            if isinstance(channel, bytes):
                                channel = channel.decode()
                            self._waiters.wake(channel[len(CHANNEL_PREFIX):])
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnect; waiters fall back to re-checking
                REDIS.lost(exc)
                await asyncio.sleep(1)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
