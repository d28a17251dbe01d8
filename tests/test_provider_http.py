"""What the push adapters share: the Pinpoint data map of the Android adapters (FCM, ADM,
Baidu) and the HTTP helpers (``Retry-After``, the OAuth access-token cache)."""

from __future__ import annotations

import asyncio

import pytest

from worker.core.vocabulary import DeliveryStatus, Outcome, PushNotification
from worker.providers.android import pinpoint_data
from worker.providers.http import AccessTokenCache, parse_retry_after

# --- the pinpoint.* data map (android.py) ----------------------------------------------------


@pytest.mark.parametrize(
    ("action", "url", "expected"),
    [
        (None, None, {"pinpoint.openApp": "true"}),
        ("OPEN_APP", "https://ignored.example", {"pinpoint.openApp": "true"}),
        ("URL", "https://example.com/a", {"pinpoint.url": "https://example.com/a"}),
        (
            "DEEP_LINK",
            "myapp://orders/42",
            {"pinpoint.deeplink": "myapp://orders/42", "pinpoint.url": "myapp://orders/42"},
        ),
        ("URL", None, {"pinpoint.openApp": "true"}),
    ],
)
def test_actions(action: str | None, url: str | None, expected: dict[str, str]) -> None:
    data = pinpoint_data(PushNotification(action=action, url=url))
    keys = {"pinpoint.openApp", "pinpoint.url", "pinpoint.deeplink"}
    assert {k: v for k, v in data.items() if k in keys} == expected


def test_pinpoint_keys_win_over_context_keys() -> None:
    data = pinpoint_data(
        PushNotification(title="real", context={"pinpoint.notification.title": "fake"})
    )
    assert data["pinpoint.notification.title"] == "real"


# --- HTTP helpers (http.py) ------------------------------------------------------------------


def test_parse_retry_after() -> None:
    assert parse_retry_after("30") == 30.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = 1_700_000_000.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:15:00 GMT", now=now) == pytest.approx(100.0)
    assert parse_retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now=now) == 0.0


def test_token_cache_margin_and_refusal_memory() -> None:
    now = [1000.0]
    cache = AccessTokenCache(clock=lambda: now[0])
    fetched: list[str] = []

    async def fetch() -> tuple[str, float]:
        fetched.append(f"tok-{len(fetched) + 1}")
        return fetched[-1], 3600.0

    refusal = Outcome(DeliveryStatus.PERMANENT_FAILURE, 400, "refused")

    async def refuse() -> Outcome:
        fetched.append("refused")
        return refusal

    async def scenario() -> None:
        assert await cache.get("k", fetch) == "tok-1"
        now[0] += 3600 - 61  # a minute and a second before expiry: still fresh
        assert await cache.get("k", fetch) == "tok-1"
        now[0] += 2  # inside the last minute: refreshed
        assert await cache.get("k", fetch) == "tok-2"
        cache.invalidate("k", "tok-1")  # a stale rejection does not drop the new token
        assert await cache.get("k", fetch) == "tok-2"
        cache.invalidate("k", "tok-2")
        assert await cache.get("k", fetch) == "tok-3"
        assert await cache.get("other", refuse) is refusal
        assert await cache.get("other", refuse) is refusal  # remembered
        now[0] += AccessTokenCache.REFUSAL_TTL_S + 1
        assert await cache.get("other", fetch) == "tok-5"

    asyncio.run(scenario())
    assert fetched == ["tok-1", "tok-2", "tok-3", "refused", "tok-5"]
