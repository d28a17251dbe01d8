"""The APNs provider: picks auth, keeps one pool per channel configuration, sends."""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from aioapns.exceptions import ConnectionClosed
from aioapns.exceptions import ConnectionError as ApnsConnectionError

from worker.core.config import Settings
from worker.core.vocabulary import (
    APNS_SANDBOX_TYPES,
    APNS_TYPES,
    NO_ANSWER_STATUS,
    NO_CONNECTION_STATUS,
    ChannelConfig,
    DeliveryStatus,
    Outcome,
    OutgoingMessage,
    PushNotification,
)
from worker.providers.apns.connection import ApnsProtocol, protocol_for
from worker.providers.apns.credentials import (
    CREDENTIAL_NAMES,
    AuthMethod,
    ProviderToken,
    certificate_topic,
    check_private_key,
    choose_auth,
    credentials_fingerprint,
    load_certificate,
    load_token_key,
    required_credentials,
    tls_context,
)
from worker.providers.apns.outcomes import outcome_for
from worker.providers.apns.payload import (
    Refused,
    prepare_request,
    refuse,
)
from worker.providers.apns.pool import ApnsPool
from worker.providers.base import push_failure

CLOSE_TIMEOUT_S = 1.0

# --- provider ----------------------------------------------------------------------------

_PoolKey = tuple[str, str, int, str, str, str]  # app, channel type, version, auth, URL, creds


@dataclass(frozen=True, slots=True)
class _Pooled:
    pool: ApnsPool
    topic: str | None


class ApnsProvider:
    """Sends to APNs for the four APNs channel types."""

    name = "apns"
    channel_types = tuple(sorted(APNS_TYPES))

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._pools: dict[_PoolKey, _Pooled] = {}
        # Pools of replaced configurations, until their connections have closed.
        self._retired: list[ApnsPool] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def send(self, delivery: OutgoingMessage, channel: ChannelConfig) -> Outcome:
        channel_type = channel.channel_type
        if channel_type not in APNS_TYPES:
            return refuse(channel_type, 400, f"APNs does not serve {channel_type}").outcome
        notification = delivery.content
        try:
            if not isinstance(notification, PushNotification):
                raise refuse(channel_type, 400, f"APNs cannot send {type(notification).__name__}")
            method = choose_auth(channel, notification)
            pooled = self._pool(channel, method)
            request = prepare_request(delivery, pooled.topic)
        except Refused as refused:
            return refused.outcome

        timeout = self._settings.provider_timeout_s
        try:
            # asyncio.timeout, not wait_for: no extra task per send (measurable at 1,000s/s).
            async with asyncio.timeout(timeout):
                response = await pooled.pool.send(request)
        except TimeoutError:
            return push_failure(
                channel_type=channel_type,
                status=DeliveryStatus.TIMEOUT,
                status_code=NO_ANSWER_STATUS,
                error_message=f"APNs did not answer within {timeout:g}s",
            )
        except (ApnsConnectionError, ConnectionClosed, OSError) as exc:
            # aioapns raises a bare ConnectionError from the real one.
            cause = exc.__context__ if isinstance(exc, ApnsConnectionError) else exc
            return push_failure(
                channel_type=channel_type,
                status=DeliveryStatus.TEMPORARY_FAILURE,
                status_code=NO_CONNECTION_STATUS,
                error_message=f"Could not reach APNs: {type(cause).__name__}: {cause}"[:500],
            )
        outcome = outcome_for(response, request, channel_type, CREDENTIAL_NAMES[method])
        if response.status == 403:
            # A fresh JWT is the one thing that may change the next answer.
            auth = pooled.pool.auth_provider
            if isinstance(auth, ProviderToken):
                auth.renew()
        return outcome

    def _pool(self, channel: ChannelConfig, method: AuthMethod) -> _Pooled:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # Connections belong to the loop that made them; those of a finished loop are
            # gone with it.
            self._pools, self._retired = {}, []
            self._loop = loop
        values = required_credentials(channel, method)
        url = (
            self._settings.apns_sandbox_url
            if channel.channel_type in APNS_SANDBOX_TYPES
            else self._settings.apns_url
        )
        key: _PoolKey = (
            channel.app_id,
            channel.channel_type,
            channel.version,
            method,
            url,
            credentials_fingerprint(method, values),
        )
        pooled = self._pools.get(key)
        if pooled is None:
            pooled = self._new_pool(channel, method, values, url)
            # A newer configuration of the same channel replaces the older one; its idle
            # connections close on aioapns' inactivity timer.
            self._retired = [p for p in self._retired if p.connections]
            for old in [k for k in self._pools if k[:2] == key[:2] and k[3:5] == key[3:5]]:
                self._retired.append(self._pools.pop(old).pool)
            self._pools[key] = pooled
        return pooled

    def _new_pool(
        self, channel: ChannelConfig, method: AuthMethod, values: Mapping[str, str], url: str
    ) -> _Pooled:
        parts = urlsplit(url)
        host = parts.hostname or ""
        protocol_class = protocol_for(host, parts.port or 443)
        auth: ProviderToken | None = None
        if method == "TOKEN":
            auth = ProviderToken(
                load_token_key(channel, values["TokenKey"]), values["TokenKeyId"], values["TeamId"]
            )
            context = tls_context(self._settings)
            topic: str | None = values["BundleId"]
        else:
            certificate = load_certificate(channel, values["Certificate"])
            check_private_key(channel, values["PrivateKey"])
            try:
                context = tls_context(self._settings, values["Certificate"], values["PrivateKey"])
            except ssl.SSLError as exc:
                raise refuse(
                    channel.channel_type,
                    403,
                    f"The {channel.channel_type} channel's Certificate and PrivateKey cannot be "
                    f"used together: {exc.reason or exc}",
                ) from None
            topic = values["BundleId"] or certificate_topic(certificate)
        return _Pooled(ApnsPool(protocol_class, context, auth, topic), topic)

    async def aclose(self) -> None:
        pools = [pooled.pool for pooled in self._pools.values()] + self._retired
        self._pools, self._retired = {}, []
        if self._loop is not asyncio.get_running_loop():
            return  # those connections died with their loop
        connections = [
            connection
            for pool in pools
            for connection in pool.connections
            if isinstance(connection, ApnsProtocol)
        ]
        for connection in connections:
            connection.close()
        if not connections:
            return
        # A TLS close is a few round trips; wait for them briefly rather than leave sockets
        # to the garbage collector, then cut what is left.
        try:
            await asyncio.wait_for(
                asyncio.gather(*(c.closed.wait() for c in connections)), CLOSE_TIMEOUT_S
            )
        except TimeoutError:
            for connection in connections:
                connection.abort()
