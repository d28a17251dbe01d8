"""The one small interface every provider adapter implements.

A provider receives an :class:`OutgoingMessage` — one rendered message for one address — plus the
application's :class:`ChannelConfig`, and returns an :class:`Outcome`. Whenever the provider
answered, the answer is an outcome value, never an exception: the pipeline records it,
retries it or finalises it. Exceptions are for bugs.

Rendering happens before the provider is called (``worker.delivery.rendering``); adapters only
turn the rendered content into the provider's wire format (pure builders, tested apart) and do
the I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol

from worker.core.vocabulary import ChannelConfig, DeliveryStatus, Outcome, OutgoingMessage


class InvalidCredentials(ValueError):
    """A channel's credentials, as given to UpdateChannel, cannot work with its provider."""


@dataclass(frozen=True, slots=True)
class OutcomeRule:
    """A row of an adapter's outcome table: what one provider answer means, with the
    provider's documented reason. Every adapter's table (APNs, FCM, ADM, Baidu, Twilio) is made
    of these."""

    status: DeliveryStatus
    reason: str  # the provider's documented meaning, paraphrased
    deactivate: bool = False  # the address is dead: the endpoint becomes INACTIVE
    credential: bool = False  # the channel's credentials are at fault, not the message


def push_failure(
    *,
    channel_type: str,
    status: DeliveryStatus,
    status_code: int,
    error_message: str,
    provider_error: str = "",
    provider_response: str = "",
    retry_after: float | None = None,
    deactivate_endpoint: bool = False,
) -> Outcome:
    """An outcome for a failed push, with the JSON ``StatusMessage`` Pinpoint gives (§4)."""
    message = json.dumps(
        {
            "errorMessage": error_message,
            "channelType": channel_type,
            "pushProviderStatusCode": str(status_code),
            "pushProviderError": provider_error,
            "pushProviderResponse": provider_response,
        }
    )
    return Outcome(
        status=status,
        status_code=status_code,
        status_message=message,
        retry_after=retry_after,
        deactivate_endpoint=deactivate_endpoint,
    )


class Provider(Protocol):
    """A transport for one or more channel types. One instance per worker process."""

    name: str

    async def send(self, delivery: OutgoingMessage, channel: ChannelConfig) -> Outcome:
        """Deliver, or say why not. Must return within the configured provider timeout."""
        ...

    async def aclose(self) -> None:
        """Release pooled connections."""
        ...
