"""Building a worker process's :class:`~worker.delivery.batch.Runtime`."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from worker.core.config import Settings
from worker.core.db import session_factory
from worker.delivery.batch import RequestCache, Runtime
from worker.delivery.notify import redis_publisher
from worker.management.channels import ChannelCache
from worker.providers.registry import ProviderRegistry


def wakeup_url(settings: Settings) -> str | None:
    if settings.redis_url:
        return settings.redis_url
    if settings.broker_url and settings.broker_url.startswith(("redis://", "rediss://")):
        return settings.broker_url
    return None


def build_runtime(settings: Settings, notify: Callable[[str], None] | None = None) -> Runtime:
    if notify is None:
        url = wakeup_url(settings)
        notify = redis_publisher(url) if url else (lambda _request_id: None)
    return Runtime(
        settings=settings,
        sessions=session_factory(settings),
        providers=ProviderRegistry(settings, console_fallback=settings.embedded),
        loop=asyncio.new_event_loop(),
        channels=ChannelCache(settings),
        requests=RequestCache(),
        notify=notify,
        lease_s=settings.lease_s,
    )
