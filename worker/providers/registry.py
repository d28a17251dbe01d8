"""Which provider delivers which channel type, chosen by configuration.

One instance of each provider per worker process, created on first use so a process only
opens the connections it needs.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable

from worker.core.config import Settings
from worker.core.vocabulary import ChannelConfig, DeliveryStatus, Outcome, OutgoingMessage
from worker.providers.base import Provider
from worker.providers.console import ConsoleProvider

# channel type -> (module, class) of the adapter that delivers it
_PUSH = {
    "APNS": ("worker.providers.apns", "ApnsProvider"),
    "APNS_SANDBOX": ("worker.providers.apns", "ApnsProvider"),
    "APNS_VOIP": ("worker.providers.apns", "ApnsProvider"),
    "APNS_VOIP_SANDBOX": ("worker.providers.apns", "ApnsProvider"),
    "GCM": ("worker.providers.fcm", "FcmProvider"),
    "ADM": ("worker.providers.adm", "AdmProvider"),
    "BAIDU": ("worker.providers.baidu", "BaiduProvider"),
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


def _spec(settings: Settings, channel_type: str) -> tuple[str, str] | str:
    """A (module, class) to import, or the name of the setting that is missing."""
    if channel_type in _PUSH:
        return _PUSH[channel_type]
    if channel_type == "EMAIL":
        return ("worker.providers.smtp", "SmtpProvider") if settings.smtp_url else "HERALD_SMTP_URL"
    if channel_type == "SMS" and settings.sms_transport == "smpp":
        return ("worker.providers.smpp", "SmppSmsProvider")
    if channel_type in ("SMS", "VOICE"):
        if settings.twilio_account_sid and settings.twilio_auth_token:
            cls = "TwilioSmsProvider" if channel_type == "SMS" else "TwilioVoiceProvider"
            return ("worker.providers.twilio", cls)
        return "HERALD_TWILIO_ACCOUNT_SID and HERALD_TWILIO_AUTH_TOKEN"
    return f"channel type {channel_type}"


class ProviderRegistry:
    def __init__(self, settings: Settings, *, console_fallback: bool) -> None:
        self._settings = settings
        self._console_fallback = console_fallback
        self._by_class: dict[tuple[str, str], Provider] = {}
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
        spec = _spec(self._settings, channel_type)
        if isinstance(spec, str):
            return ConsoleProvider() if self._console_fallback else UnconfiguredProvider(spec)
        provider = self._by_class.get(spec)
        if provider is None:
            factory: Callable[[Settings], Provider] = getattr(
                importlib.import_module(spec[0]), spec[1]
            )
            provider = factory(self._settings)
            self._by_class[spec] = provider
        return provider

    async def aclose(self) -> None:
        for provider in {id(p): p for p in self._by_type.values()}.values():
            await provider.aclose()
