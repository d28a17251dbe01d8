"""Which provider delivers which channel type, chosen by configuration.

One instance of each provider class per worker process, created on first use so a process only
opens the connections it needs. Channel credentials are checked by the provider that will use
them (:func:`check_channel_credentials`), when a channel is updated.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from worker.core.config import Settings
from worker.core.vocabulary import (
    APNS_TYPES,
    ChannelConfig,
    ChannelType,
    DeliveryStatus,
    Outcome,
    OutgoingMessage,
)
from worker.providers.adm import AdmProvider
from worker.providers.apns import ApnsProvider
from worker.providers.baidu import BaiduProvider
from worker.providers.base import Provider
from worker.providers.console import ConsoleProvider
from worker.providers.fcm import FcmProvider
from worker.providers.smpp import SmppSmsProvider
from worker.providers.smtp import SmtpProvider
from worker.providers.twilio import TwilioSmsProvider, TwilioVoiceProvider

ProviderClass = Callable[[Settings], Provider]

# channel type -> the adapter that delivers it, whatever the configuration
_PUSH: dict[str, ProviderClass] = {
    **dict.fromkeys(APNS_TYPES, ApnsProvider),
    ChannelType.GCM: FcmProvider,
    ChannelType.ADM: AdmProvider,
    ChannelType.BAIDU: BaiduProvider,
}

class UnconfiguredProvider:
    """A channel whose transport is not configured on this deployment."""

    name = "unconfigured"

    def __init__(self, setting: str) -> None:
        self._setting = setting

    async def send(self, delivery: OutgoingMessage, channel: ChannelConfig) -> Outcome:
        return Outcome(
            DeliveryStatus.PERMANENT_FAILURE,
            400,
            f"No {delivery.channel_type} transport is configured on this Herald "
            f"deployment ({self._setting}).",
        )

    async def aclose(self) -> None:
        return None


def _provider_class(settings: Settings, channel_type: str) -> ProviderClass | str:
    """The adapter for ``channel_type``, or the name of the setting that is missing."""
    if channel_type in _PUSH:
        return _PUSH[channel_type]
    if channel_type == ChannelType.EMAIL:
        return SmtpProvider if settings.smtp_url else "HERALD_SMTP_URL"
    if channel_type == ChannelType.SMS and settings.sms_transport == "smpp":
        return SmppSmsProvider
    if channel_type in (ChannelType.SMS, ChannelType.VOICE):
        if settings.twilio_account_sid and settings.twilio_auth_token:
            return TwilioSmsProvider if channel_type == ChannelType.SMS else TwilioVoiceProvider
        return "HERALD_TWILIO_ACCOUNT_SID and HERALD_TWILIO_AUTH_TOKEN"
    return f"channel type {channel_type}"


class ProviderRegistry:
    def __init__(self, settings: Settings, *, console_fallback: bool) -> None:
        self._settings = settings
        self._console_fallback = console_fallback
        self._by_class: dict[ProviderClass, Provider] = {}
        self._by_type: dict[str, Provider] = {}
        self._lock = threading.Lock()

    def __call__(self, channel_type: str) -> Provider:
        provider = self._by_type.get(channel_type)
        if provider is None:
            with self._lock:
                provider = self._by_type.get(channel_type) or self._create(channel_type)
                self._by_type[channel_type] = provider
        return provider

    def _create(self, channel_type: str) -> Provider:
        cls = _provider_class(self._settings, channel_type)
        if isinstance(cls, str):
            return ConsoleProvider() if self._console_fallback else UnconfiguredProvider(cls)
        provider = self._by_class.get(cls)
        if provider is None:
            provider = cls(self._settings)
            self._by_class[cls] = provider
        return provider

    async def aclose(self) -> None:
        for provider in {id(p): p for p in self._by_type.values()}.values():
            await provider.aclose()
