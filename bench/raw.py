"""The raw client side of the benchmark: ApnsProvider straight to the fake APNs, in a
process of its own (started by ``bench.__main__.raw_run``)."""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from pathlib import Path

from worker.core.config import Settings
from worker.core.vocabulary import ChannelConfig, OutgoingMessage, PushNotification
from worker.providers.apns import ApnsProvider

BUNDLE = "com.example.bench"
KEY_ID, TEAM = "BENCHKEY01", "BENCHTEAM1"


def apns_channel(key: str) -> ChannelConfig:
    return ChannelConfig(
        app_id="bench", channel_type="APNS", enabled=True,
        settings={"BundleId": BUNDLE, "TeamId": TEAM, "TokenKeyId": KEY_ID,
                  "DefaultAuthenticationMethod": "TOKEN"},
        credentials={"TokenKey": key},
    )


def raw_client_run(url: str, ca_bundle: str, key: str, count: int, in_flight: int) -> float:
    """Seconds to push ``count`` notifications with ``in_flight`` concurrent sends."""
    settings = Settings(apns_url=url, ca_bundle=Path(ca_bundle), provider_timeout_s=30)
    channel = apns_channel(key)
    notification = PushNotification(title="Bench", body="A notification of usual size")

    async def main() -> float:
        provider = ApnsProvider(settings)
        limit = asyncio.Semaphore(in_flight)

        async def one() -> None:
            async with limit:
                delivery = OutgoingMessage(str(uuid.uuid4()), "APNS", secrets.token_hex(32),
                                    notification)
                outcome = await provider.send(delivery, channel)
                assert outcome.status == "SUCCESSFUL", outcome

        await one()  # connect and sign outside the measurement
        started = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(count)))
        elapsed = time.perf_counter() - started
        await provider.aclose()
        return elapsed

    return asyncio.run(main())
