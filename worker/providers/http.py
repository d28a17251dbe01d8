"""What the HTTP adapters share: reading answers, trusting servers, and the HTTP push plumbing.

Every adapter that speaks HTTP (APNs, FCM, ADM, Baidu, Twilio) uses the first half: provider
TLS trust, ``Retry-After``, the JSON body of an answer. The second half is the FCM, ADM and
Baidu adapters' common ground: :class:`HttpPushProvider` (one pooled ``httpx.AsyncClient`` per
event loop, each send bounded by ``HERALD_PROVIDER_TIMEOUT_S``), :class:`OAuthPushProvider` (FCM
and ADM's send with a bearer token, refreshed on 401), :class:`AccessTokenCache` for
OAuth access tokens and :func:`token_answer` for a token endpoint's reply, and
:func:`rule_outcome`, the outcome of an answer that a row of their outcome tables matched.

None of the clients retries on its own: every retry decision belongs to Herald's policy
(DESIGN §7).
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import math
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import certifi
import httpx

from worker.core.config import Settings
from worker.core.vocabulary import (
    NO_ANSWER_STATUS,
    NO_CONNECTION_STATUS,
    ChannelConfig,
    DeliveryStatus,
    Outcome,
    OutgoingMessage,
    PushNotification,
)
from worker.providers.android import PayloadError
from worker.providers.base import OutcomeRule, push_failure

# A provider's answer is kept only as far as an operator needs it to see what went wrong:
# StatusMessage travels to the tenant, the results extension and the dashboard.
_EXCERPT = 512
Credential = TypeVar("Credential")


def provider_tls_context(settings: Settings) -> ssl.SSLContext:
    """Public CAs (certifi, as httpx uses by default) plus ``HERALD_CA_BUNDLE`` if set."""
    context = ssl.create_default_context(cafile=certifi.where())
    if settings.ca_bundle is not None:
        context.load_verify_locations(cafile=str(settings.ca_bundle))
    return context


def excerpt(text: str) -> str:
    """A provider's answer as far as a ``StatusMessage`` carries it."""
    return text if len(text) <= _EXCERPT else text[:_EXCERPT] + "…"


def json_or_none(text: str) -> Any:
    """The JSON document a provider answered, or None when the body is empty or not JSON
    (a proxy's error page)."""
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds from now, the one reading every adapter uses: delta-seconds,
    or an HTTP-date (RFC 9110 §10.2.3; a date already past means now). Anything else, or a
    negative or non-finite number, is no answer (None)."""
    if not value:
        return None
    try:
        seconds: float | None = float(value.strip())
    except ValueError:
        seconds = None
    if seconds is not None:
        return seconds if math.isfinite(seconds) and seconds >= 0 else None
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(0.0, when.timestamp() - current)


# --- the HTTP push adapters (FCM, ADM, Baidu) ----------------------------------------------


def rule_outcome(
    rule: OutcomeRule,
    channel_type: str,
    status_code: int,
    text: str,
    headers: Mapping[str, str],
    *,
    provider_error: str,
    detail: str = "",
    deactivate: bool = False,
) -> Outcome:
    """The outcome of a push answer ``rule`` matched: the rule's reason (and the provider's
    ``detail``), the body excerpted, ``Retry-After`` kept unless the failure is permanent
    (waiting would not change it), the endpoint deactivated if the rule or ``deactivate``
    says so."""
    permanent = rule.status is DeliveryStatus.PERMANENT_FAILURE
    return push_failure(
        channel_type=channel_type,
        status=rule.status,
        status_code=status_code,
        error_message=f"{rule.reason}: {detail}" if detail else rule.reason,
        provider_error=provider_error,
        provider_response=excerpt(text),
        retry_after=None if permanent else parse_retry_after(headers.get("retry-after")),
        deactivate_endpoint=rule.deactivate or deactivate,
    )


def token_answer(
    response: httpx.Response, *, channel_type: str, refused: str
) -> tuple[str, float] | Outcome:
    """An OAuth 2.0 token endpoint's answer (RFC 6749 §5.1, §5.2): the access token and its
    lifetime in seconds, or the outcome of its refusal. ``refused`` says who refused which
    credentials; the endpoint's ``error`` and ``error_description`` are added to it."""
    body = json_or_none(response.text)
    if response.status_code == 200 and isinstance(body, dict):
        token = body.get("access_token")
        try:
            lifetime = float(body.get("expires_in", 3600))
        except (TypeError, ValueError):
            lifetime = 3600.0
        if isinstance(token, str) and token:
            return token, max(lifetime, 1.0)
    error = ""
    if isinstance(body, dict):
        error = ": ".join(str(body[k]) for k in ("error", "error_description") if body.get(k))
    if response.status_code == 429:
        status = DeliveryStatus.THROTTLED
    elif response.status_code >= 500:
        status = DeliveryStatus.TEMPORARY_FAILURE
    else:
        status = DeliveryStatus.PERMANENT_FAILURE
    return rule_outcome(
        OutcomeRule(status, refused),
        channel_type,
        response.status_code,
        response.text,
        response.headers,
        provider_error=str(body.get("error", "")) if isinstance(body, dict) else "",
        detail=error,
    )


class LoopBoundClient:
    """An ``httpx.AsyncClient`` for the running event loop.

    A worker may drive the provider from more than one event loop over its life (e.g. one
    ``asyncio.run`` per Celery task); a client or lock from a finished loop cannot be used in a
    new one, so both are recreated when the loop changes. Call ``aclose()`` before a loop
    ends; a client left behind by a finished loop can only be abandoned.
    """

    def __init__(self, factory: Callable[[], httpx.AsyncClient]) -> None:
        self._factory = factory
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def get(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = self._factory()
            self._loop = loop
        return self._client

    async def aclose(self) -> None:
        client, loop = self._client, self._loop
        self._client = self._loop = None
        if client is not None and loop is asyncio.get_running_loop():
            await client.aclose()


class HttpPushProvider:
    """The common ground of the FCM, ADM and Baidu adapters.

    A subclass names its ``channel_type`` and the ``service`` its messages speak of, and
    implements ``send``, running its exchange with the provider through :meth:`_answer`.
    """

    name: str
    channel_type: str
    service: str  # as StatusMessages name it: "FCM", "ADM", "Baidu"
    http2 = False

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._http = LoopBoundClient(self._new_client)

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            http2=self.http2,
            verify=provider_tls_context(self._settings),
            timeout=httpx.Timeout(self._settings.provider_timeout_s),
            follow_redirects=False,
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def _notification(self, delivery: OutgoingMessage) -> PushNotification:
        if not isinstance(delivery.content, PushNotification):
            raise TypeError(f"{self.service} cannot send {type(delivery.content).__name__}")
        return delivery.content

    def _refused(self, status_code: int, message: str) -> Outcome:
        """Refused before any request: what the provider would have answered, unasked."""
        return push_failure(
            channel_type=self.channel_type,
            status=DeliveryStatus.PERMANENT_FAILURE,
            status_code=status_code,
            error_message=message,
        )

    async def _answer(self, exchange: Awaitable[Outcome]) -> Outcome:
        """``exchange``'s outcome within ``HERALD_PROVIDER_TIMEOUT_S``, or the outcome of its
        getting no answer (504) or no connection (503)."""
        timeout = self._settings.provider_timeout_s
        try:
            async with asyncio.timeout(timeout):
                return await exchange
        except (TimeoutError, httpx.TimeoutException):
            return push_failure(
                channel_type=self.channel_type,
                status=DeliveryStatus.TIMEOUT,
                status_code=NO_ANSWER_STATUS,
                error_message=f"{self.service} did not answer within {timeout:g} s",
            )
        except httpx.TransportError as exc:
            return push_failure(
                channel_type=self.channel_type,
                status=DeliveryStatus.TEMPORARY_FAILURE,
                status_code=NO_CONNECTION_STATUS,
                error_message=f"could not reach {self.service}: {type(exc).__name__}: {exc}",
            )


class OAuthPushProvider(HttpPushProvider, Generic[Credential]):
    """The FCM and ADM adapters' one send skeleton: the channel's credential, the payload
    built and measured, then a POST with an OAuth bearer token — one token per credential,
    shared by every send (:class:`AccessTokenCache`), fetched again once when the provider
    answers 401 to it.

    A subclass says how to read its ``Credential`` from the channel, fetch a token with it,
    build and measure the payload, address the POST, and classify the answer.
    """

    payload_limit: int

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._tokens = AccessTokenCache()

    async def send(self, delivery: OutgoingMessage, channel: ChannelConfig) -> Outcome:
        notification = self._notification(delivery)
        credential = self._credential(channel)
        if isinstance(credential, Outcome):
            return credential
        try:
            message = self._build(notification, delivery.address)
        except PayloadError as exc:
            return self._refused(400, str(exc))
        size = self._payload_size(message)
        if size > self.payload_limit:
            return self._too_large(size)
        body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
        return await self._answer(self._post(credential, delivery.address, body))

    async def _post(self, credential: Credential, address: str, body: bytes) -> Outcome:
        key = self._token_key(credential)
        url = self._url(credential, address)
        for attempt in (1, 2):
            token = await self._tokens.get(key, lambda: self._fetch_token(credential))
            if isinstance(token, Outcome):
                return token
            response = await self._http.get().post(
                url, content=body, headers={"Authorization": f"Bearer {token}", **self._headers()}
            )
            # The provider rejected our access token (revoked or expired early): get a fresh
            # one and try once more within this attempt.
            if response.status_code == 401 and attempt == 1 and self._token_rejected(response):
                self._tokens.invalidate(key, token)
                continue
            return self._classify(response, address)
        raise AssertionError("unreachable")  # pragma: no cover

    # --- what each provider says -------------------------------------------------------------

    def _credential(self, channel: ChannelConfig) -> Credential | Outcome:
        raise NotImplementedError

    def _token_key(self, credential: Credential) -> str:
        raise NotImplementedError

    async def _fetch_token(self, credential: Credential) -> tuple[str, float] | Outcome:
        raise NotImplementedError

    def _build(self, notification: PushNotification, address: str) -> dict[str, Any]:
        raise NotImplementedError

    def _payload_size(self, message: Mapping[str, Any]) -> int:
        raise NotImplementedError

    def _too_large(self, size: int) -> Outcome:
        raise NotImplementedError

    def _url(self, credential: Credential, address: str) -> str:
        raise NotImplementedError

    def _headers(self) -> dict[str, str]:
        return {}

    def _token_rejected(self, response: httpx.Response) -> bool:
        """Whether a 401 says our access token was rejected (rather than the message)."""
        return True

    def _classify(self, response: httpx.Response, address: str) -> Outcome:
        raise NotImplementedError


# --- OAuth access tokens (FCM, ADM) ----------------------------------------------------------


@dataclass(slots=True)
class _CachedToken:
    value: str
    refresh_at: float  # monotonic


@dataclass(slots=True)
class _CachedRefusal:
    outcome: Outcome
    until: float  # monotonic


# Fetches a token: (access token, lifetime in seconds), or the outcome that refused it.
TokenFetch = Callable[[], Awaitable["tuple[str, float] | Outcome"]]


class AccessTokenCache:
    """OAuth access tokens per credential, each refreshed by one coroutine at a time.

    A token is used until shortly before it expires (a minute, or half its lifetime if that is
    shorter). A permanent refusal is remembered for a minute for the same credential, so a
    request to thousands of endpoints of a misconfigured app costs one token request, not one
    per endpoint; changed credentials have a different key and are tried at once.
    """

    REFUSAL_TTL_S = 60.0

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tokens: dict[str, _CachedToken] = {}
        self._refusals: dict[str, _CachedRefusal] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    async def get(self, key: str, fetch: TokenFetch) -> str | Outcome:
        cached = self._cached(key)
        if cached is not None:
            return cached
        async with self._lock(key):
            cached = self._cached(key)
            if cached is not None:
                return cached
            result = await fetch()
            now = self._clock()
            if isinstance(result, Outcome):
                if result.status is DeliveryStatus.PERMANENT_FAILURE:
                    self._refusals[key] = _CachedRefusal(result, now + self.REFUSAL_TTL_S)
                return result
            token, lifetime = result
            margin = min(60.0, lifetime / 2)
            self._tokens[key] = _CachedToken(token, now + lifetime - margin)
            self._refusals.pop(key, None)
            return token

    def invalidate(self, key: str, token: str) -> None:
        """Forget ``token`` (the provider rejected it) unless it was already replaced."""
        cached = self._tokens.get(key)
        if cached is not None and cached.value == token:
            del self._tokens[key]

    def _cached(self, key: str) -> str | Outcome | None:
        now = self._clock()
        token = self._tokens.get(key)
        if token is not None and now < token.refresh_at:
            return token.value
        refusal = self._refusals.get(key)
        if refusal is not None and now < refusal.until:
            return refusal.outcome
        return None

    def _lock(self, key: str) -> asyncio.Lock:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._locks.clear()
            self._loop = loop
        lock = self._locks.get(key)
        if lock is None:
            lock = self._locks[key] = asyncio.Lock()
        return lock
