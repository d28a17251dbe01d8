"""What the provider tests share: a fake served for one test, the settings, channel and
deliveries a provider is driven with, driving it on an event loop of its own (as a worker's
task does), and reading a push failure's JSON ``StatusMessage``."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any, TypeVar

from tests.fakes.http import FakeHttpServer
from worker.core.config import Settings
from worker.core.vocabulary import (
    ChannelConfig,
    Outcome,
    OutgoingMessage,
    PushNotification,
    SmsContent,
    VoiceContent,
)
from worker.providers.base import Provider

Fake = TypeVar("Fake", bound=FakeHttpServer)
AnyProvider = TypeVar("AnyProvider", bound=Provider)
T = TypeVar("T")

SENDER = "+15550001111"  # the origination number of the SMS and voice deliveries
PUSH_STATUS_MEMBERS = frozenset(
    {"errorMessage", "channelType", "pushProviderStatusCode", "pushProviderError",
     "pushProviderResponse"}
)  # fmt: skip


def serve(fake: Fake) -> Iterator[Fake]:
    """A fixture's body: ``fake`` running for one test, which fails if the fake crashed."""
    with fake:
        yield fake
    assert not fake.crashes


def provider_settings(**values: Any) -> Settings:
    """Settings for one provider under test: its URL and credentials, a 2 s timeout unless
    ``provider_timeout_s`` says otherwise."""
    return Settings(**{"provider_timeout_s": 2.0, **values})


def channel_config(
    channel_type: str,
    *,
    settings: dict[str, Any] | None = None,
    credentials: dict[str, str] | None = None,
) -> ChannelConfig:
    """An app's enabled channel."""
    return ChannelConfig(
        app_id="app-1",
        channel_type=channel_type,
        enabled=True,
        settings=settings or {},
        credentials=credentials or {},
    )


def push_delivery(
    channel_type: str, address: str, notification: PushNotification | None = None
) -> OutgoingMessage:
    """A push to ``address``, by default titled "Hello" and saying "World"."""
    return OutgoingMessage(
        delivery_id=str(uuid.uuid4()),
        channel_type=channel_type,
        address=address,
        content=notification or PushNotification(title="Hello", body="World"),
    )


def sms_delivery(to: str, body: str = "hello", **content: Any) -> OutgoingMessage:
    """An SMS from :data:`SENDER` unless ``origination_number`` says otherwise."""
    content.setdefault("origination_number", SENDER)
    return OutgoingMessage(str(uuid.uuid4()), "SMS", to, SmsContent(body=body, **content))


def voice_delivery(to: str, body: str = "hello", **content: Any) -> OutgoingMessage:
    """A call from :data:`SENDER` unless ``origination_number`` says otherwise."""
    content.setdefault("origination_number", SENDER)
    return OutgoingMessage(str(uuid.uuid4()), "VOICE", to, VoiceContent(body=body, **content))


def drive(provider: AnyProvider, scenario: Callable[[AnyProvider], Awaitable[T]]) -> T:
    """What ``scenario`` does with ``provider``, on a new event loop that closes the provider
    before it ends."""

    async def run() -> T:
        try:
            return await scenario(provider)
        finally:
            await provider.aclose()

    return asyncio.run(run())


def send_all(
    provider: Provider,
    deliveries: Iterable[OutgoingMessage],
    channel: ChannelConfig,
    *,
    concurrent: bool = False,
) -> list[Outcome]:
    """Each delivery's outcome, sent one after another (or all at once) by :func:`drive`."""

    async def scenario(provider: Provider) -> list[Outcome]:
        if concurrent:
            return list(await asyncio.gather(*(provider.send(d, channel) for d in deliveries)))
        return [await provider.send(d, channel) for d in deliveries]

    return drive(provider, scenario)


def send_one(provider: Provider, delivery: OutgoingMessage, channel: ChannelConfig) -> Outcome:
    [outcome] = send_all(provider, [delivery], channel)
    return outcome


def push_status(outcome: Outcome, channel_type: str | None = None) -> dict[str, str]:
    """A push failure's ``StatusMessage``: Pinpoint's five members, for ``channel_type``."""
    message: dict[str, str] = json.loads(outcome.status_message)
    assert set(message) == PUSH_STATUS_MEMBERS
    if channel_type is not None:
        assert message["channelType"] == channel_type
    return message
