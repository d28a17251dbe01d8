"""Per-application request rate limits: a token bucket of ``HERALD_RATE_LIMIT_RPS`` refilled
continuously, holding at most ``HERALD_RATE_LIMIT_BURST`` tokens.

With ``HERALD_REDIS_URL`` the bucket lives in Redis (one atomic Lua script per request), so
every API process shares it; otherwise it is in-process (the embedded default).

Every signed call counts, not only sends: Pinpoint's quotas are per operation, but Herald has
one configured rate, and a tenant's endpoint and channel calls load the same database its
sends do. App-scoped calls spend the app's bucket; GetApps and CreateApp spend a bucket of
the access key (``key:<id>``).
"""

from __future__ import annotations

import threading
import time
from typing import Protocol

import redis.asyncio as aioredis
import structlog

from worker.core.config import Settings
from worker.core.errors import TooManyRequests
from worker.core.outages import REDIS

log = structlog.get_logger("herald.ratelimit")

_BUCKET_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = redis.call('TIME')
local now_s = tonumber(now[1]) + tonumber(now[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now_s
tokens = math.min(burst, tokens + (now_s - at) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', tokens, 'at', now_s)
redis.call('EXPIRE', KEYS[1], math.ceil(burst / rate) + 1)
return allowed
"""


class RateLimiter(Protocol):
    async def check(self, app_id: str) -> None:
        """Raise TooManyRequests when the app is over its rate."""


def _refuse(bucket: str) -> TooManyRequests:
    # Buckets are app ids, or "key:<access key id>" for calls outside any app.
    owner = f"access key {bucket[4:]}" if bucket.startswith("key:") else f"application {bucket}"
    return TooManyRequests(f"Too many requests for {owner}; slow down and retry")


class LocalRateLimiter:
    def __init__(self, rate: float, burst: int) -> None:
        self._rate = rate
        self._burst = float(burst)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    async def check(self, app_id: str) -> None:
        now = time.monotonic()
        with self._lock:
            if len(self._buckets) > 100_000:  # bucket names come from request paths
                self._buckets.clear()
            tokens, at = self._buckets.get(app_id, (self._burst, now))
            tokens = min(self._burst, tokens + (now - at) * self._rate)
            allowed = tokens >= 1
            self._buckets[app_id] = (tokens - 1 if allowed else tokens, now)
        if not allowed:
            raise _refuse(app_id)


class RedisRateLimiter:
    def __init__(self, url: str, rate: float, burst: int) -> None:
        self._client = aioredis.Redis.from_url(url)
        self._script = self._client.register_script(_BUCKET_SCRIPT)
        self._rate = rate
        self._burst = burst

    async def check(self, app_id: str) -> None:
        try:
            allowed = await self._script(keys=[f"herald:rate:{app_id}"],
                                         args=[self._rate, self._burst])
        except Exception as exc:
            # Fail open: a Redis outage must not stop sending; the outage is logged once.
            REDIS.lost(exc)
            return
        REDIS.back()
        if not allowed:
            raise _refuse(app_id)


def build_rate_limiter(settings: Settings) -> RateLimiter:
    if settings.redis_url:
        return RedisRateLimiter(settings.redis_url, settings.rate_limit_rps, settings.burst)
    return LocalRateLimiter(settings.rate_limit_rps, settings.burst)
