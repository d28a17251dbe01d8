"""A pool of APNs connections for one (app channel, auth, URL), on aioapns' pool."""

from __future__ import annotations

import functools
import ssl
from typing import cast

from aioapns.connection import (
    APNsBaseClientProtocol,
    APNsBaseConnectionPool,
    AuthorizationHeaderProvider,
)

from worker.providers.apns.connection import ApnsProtocol, ApnsResponse
from worker.providers.apns.payload import ApnsRequest

# Connections per pool: APNs serves many concurrent streams on one connection (it announces
# the number in SETTINGS), aioapns opens another only when all are busy.
MAX_CONNECTIONS = 10


class ApnsPool(APNsBaseConnectionPool):
    """aioapns' connection pool for one (channel configuration, auth, URL)."""

    def __init__(
        self,
        protocol_class: type[ApnsProtocol],
        ssl_context: ssl.SSLContext,
        auth_provider: AuthorizationHeaderProvider | None,
        topic: str | None,
    ) -> None:
        super().__init__(topic=topic, max_connections=MAX_CONNECTIONS, max_connection_attempts=1)
        self.protocol_class = protocol_class
        self.ssl_context = ssl_context
        self.auth_provider = auth_provider
        self.topic = topic

    async def create_connection(self) -> APNsBaseClientProtocol:
        protocol_class = cast(type[ApnsProtocol], self.protocol_class)
        _, protocol = await self.loop.create_connection(
            functools.partial(
                protocol_class,
                self.topic or "",
                self.loop,
                self.discard_connection,
                self.auth_provider,
            ),
            host=protocol_class.APNS_SERVER,
            port=protocol_class.APNS_PORT,
            ssl=self.ssl_context,
        )
        return protocol

    def discard_connection(self, connection: APNsBaseClientProtocol) -> None:
        # A connection can be lost before aioapns has listed it.
        if connection in self.connections:
            super().discard_connection(connection)

    async def send(self, request: ApnsRequest) -> ApnsResponse:
        """One attempt: Herald's retry policy, not aioapns', decides about another."""
        connection = await self.acquire()
        assert isinstance(connection, ApnsProtocol)
        return await connection.exchange(request)
