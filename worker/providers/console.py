"""The embedded default's stand-in for any channel with no transport configured.

It logs the rendered message and reports success, saying plainly in ``StatusMessage`` that
nothing left the machine. For development only.
"""

from __future__ import annotations

import dataclasses

import structlog

from worker.core.vocabulary import ChannelConfig, DeliveryStatus, Outcome, OutgoingMessage

log = structlog.get_logger("herald.console")


class ConsoleProvider:
    name = "console"

    async def send(self, delivery: OutgoingMessage, channel: ChannelConfig) -> Outcome:
        log.info(
            "console delivery",
            channel=delivery.channel_type,
            address=delivery.address,
            content=dataclasses.asdict(delivery.content),
        )
        return Outcome(
            DeliveryStatus.SUCCESSFUL,
            200,
            f"Delivered to the console provider: no {delivery.channel_type} transport is "
            "configured, so the message was only logged (development mode)",
            message_id=delivery.delivery_id,
        )

    async def aclose(self) -> None:
        return None
