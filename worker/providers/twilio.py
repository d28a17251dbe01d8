"""SMS and voice over Twilio's REST API (``HERALD_TWILIO_*``).

``TwilioSmsProvider`` creates a Message (``POST /2010-04-01/Accounts/{sid}/Messages.json``),
``TwilioVoiceProvider`` a Call (``.../Calls.json``) whose inline TwiML says the rendered body.
Both use the ``twilio`` library's aiohttp client, and need twilio 9.10 or later: its
``create_with_http_info_async`` (the answer with its HTTP status) first shipped there. The
library builds every ``api.twilio.com`` URL from its domain's ``base_url``
(``twilio.base.domain.Domain.absolute_url``), so pointing Herald at ``HERALD_TWILIO_URL`` is
setting that one attribute; no URL rewriting needed.

What Twilio answered becomes an :class:`Outcome` through :data:`TWILIO_OUTCOMES`, one table
for both channels. Twilio's HTTP status is the ``StatusCode`` (DESIGN.md §4); when no answer
came there is none, and Herald uses 503 (connection failed) and 504 (no answer in time).
"""

from __future__ import annotations

import asyncio
import base64
import re
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.rest import Client
from twilio.twiml.voice_response import VoiceResponse

from worker.core.config import ConfigError, Settings
from worker.core.vocabulary import (
    NO_ANSWER_STATUS,
    NO_CONNECTION_STATUS,
    ChannelConfig,
    DeliveryStatus,
    Outcome,
    OutgoingMessage,
    VoiceContent,
)
from worker.providers.base import OutcomeRule
from worker.providers.http import json_or_none, parse_retry_after, provider_tls_context
from worker.providers.phone import phone_delivery, refused, sms_route

# --- TwiML ---------------------------------------------------------------------------------

# Characters XML 1.0 cannot carry at all; ElementTree would emit them and Twilio reject the
# document, so they are dropped (tab, LF and CR are allowed and kept).
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def twiml_voice(voice_id: str | None) -> str | None:
    """Pinpoint's ``VoiceId`` is an Amazon Polly voice name ("Joanna"); Twilio speaks Polly
    voices as ``Polly.<Name>`` (https://www.twilio.com/docs/voice/twiml/say/text-speech).
    A value that already names a Twilio voice family (``Polly.…``, ``Google.…``) or a basic
    voice (``man``, ``woman``, ``alice``) is passed through."""
    if not voice_id:
        return None
    if "." in voice_id or voice_id in ("man", "woman", "alice"):
        return voice_id
    return f"Polly.{voice_id}"


def build_say_twiml(content: VoiceContent) -> str:
    """The TwiML document that says ``content.body`` once.

    Pinpoint's ``LanguageCode`` ("en-US", "es-MX", "arb", "cmn-CN") is Polly's language code,
    which is also what TwiML ``<Say language>`` takes, so it passes through unchanged; the
    voice is mapped by :func:`twiml_voice`. The library's builder is ElementTree underneath:
    text and attributes are XML-escaped, so no substituted value can add markup.
    """
    response = VoiceResponse()
    response.say(
        _XML_INVALID.sub("", content.body),
        voice=twiml_voice(content.voice_id),
        language=_XML_INVALID.sub("", content.language_code) if content.language_code else None,
    )
    return str(response.to_xml(xml_declaration=True))


# --- outcome table -------------------------------------------------------------------------


_PERMANENT = DeliveryStatus.PERMANENT_FAILURE

# Twilio error codes → outcome; the reason is Twilio's documented meaning,
# https://www.twilio.com/docs/errors/<code>. A code wins over the HTTP status it came with.
TWILIO_ERRORS: dict[int, OutcomeRule] = {
    21610: OutcomeRule(DeliveryStatus.OPT_OUT, "recipient unsubscribed (replied STOP)"),
    20429: OutcomeRule(DeliveryStatus.THROTTLED, "too many requests"),
    20003: OutcomeRule(_PERMANENT, "check HERALD_TWILIO_ACCOUNT_SID / HERALD_TWILIO_AUTH_TOKEN"),
    21211: OutcomeRule(_PERMANENT, "invalid 'To' phone number"),
    21614: OutcomeRule(_PERMANENT, "'To' is not a valid mobile number"),
    21612: OutcomeRule(_PERMANENT, "'To' cannot be reached by SMS from this sender"),
    21408: OutcomeRule(_PERMANENT, "sending to this region is not enabled"),
    21608: OutcomeRule(_PERMANENT, "'To' is not verified (trial account)"),
    21635: OutcomeRule(_PERMANENT, "'To' is a landline"),
    21212: OutcomeRule(_PERMANENT, "invalid 'From' number"),
    21606: OutcomeRule(_PERMANENT, "'From' is not an SMS-capable number of this account"),
    21210: OutcomeRule(_PERMANENT, "'From' is not a verified caller ID of this account"),
    21215: OutcomeRule(_PERMANENT, "calling this region is not enabled (geo permissions)"),
    21216: OutcomeRule(_PERMANENT, "call blocked by Twilio"),
    21217: OutcomeRule(_PERMANENT, "phone number does not appear to be valid"),
}
# Answers without a known code, by HTTP status class: the first range that holds it.
TWILIO_STATUS: tuple[tuple[range, OutcomeRule], ...] = (
    (range(401, 402), OutcomeRule(_PERMANENT, "Twilio rejected the credentials")),
    (range(429, 430), OutcomeRule(DeliveryStatus.THROTTLED, "too many requests")),
    (range(500, 600), OutcomeRule(DeliveryStatus.TEMPORARY_FAILURE, "Twilio server error")),
    # Any other 4xx: the request itself is wrong, and sending it again will not help.
    (range(400, 500), OutcomeRule(_PERMANENT, "Twilio rejected the request")),
)
UNEXPECTED = OutcomeRule(DeliveryStatus.UNKNOWN_FAILURE, "unexpected answer from Twilio")


def classify(http_status: int, code: int | None) -> OutcomeRule:
    if code is not None and code in TWILIO_ERRORS:
        return TWILIO_ERRORS[code]
    for statuses, rule in TWILIO_STATUS:
        if http_status in statuses:
            return rule
    return UNEXPECTED


def error_outcome(http_status: int, body: str, retry_after: str | None) -> Outcome:
    """The outcome for a non-2xx answer; ``body`` is Twilio's error JSON
    (``{"code", "message", "more_info", "status"}``) or anything else a proxy sent."""
    code: int | None = None
    message = ""
    payload = json_or_none(body)
    if isinstance(payload, dict):
        raw_code = payload.get("code")
        code = raw_code if isinstance(raw_code, int) else None
        message = str(payload.get("message") or payload.get("detail") or "")
    row = classify(http_status, code)
    parts = [f"Twilio {http_status}"]
    if code is not None:
        parts.append(f"error {code}")
    text = " ".join(parts) + ": " + (message or body[:200] or row.reason)
    if message and row.reason.casefold() not in message.casefold():
        text += f" ({row.reason})"
    return Outcome(
        status=row.status,
        status_code=http_status,
        status_message=text,
        retry_after=parse_retry_after(retry_after)
        if row.status is DeliveryStatus.THROTTLED
        else None,
    )


# --- HTTP ----------------------------------------------------------------------------------


class _TwilioAnswer(Exception):
    """A non-2xx answer, whole. The library's TwilioRestException keeps Twilio's code and
    message but drops the headers, and ``Retry-After`` is a header."""

    def __init__(self, status: int, text: str, headers: Any) -> None:
        super().__init__(status)
        self.status = status
        self.text = text
        self.headers = headers


class _HttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]
    """The library's aiohttp client with Herald's TLS trust, no retries of its own (Herald's
    retry policy decides), and non-2xx answers raised as :class:`_TwilioAnswer`."""

    def __init__(self, ssl_context: ssl.SSLContext) -> None:
        super().__init__(pool_connections=False)
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ssl_context))

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,  # noqa: ASYNC109 - the library's signature
        allow_redirects: bool = False,
    ) -> Any:
        if auth is not None:
            # aiohttp 3.12+ deprecates its ``auth=`` argument, which the library uses.
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode("latin-1")).decode()
            headers = {**(headers or {}), "Authorization": f"Basic {token}"}
        response = await super().request(
            method,
            url,
            params=params,
            data=data,
            headers=headers,
            auth=None,
            timeout=timeout,
            allow_redirects=allow_redirects,
        )
        if not 200 <= response.status_code < 300:
            raise _TwilioAnswer(response.status_code, response.text, response.headers)
        return response

    # The library logs every request and response at INFO; Herald records each attempt itself.
    def log_request(self, kwargs: dict[str, Any]) -> None:
        pass

    def log_response(self, status_code: int, response: Any) -> None:
        pass


class _TwilioTransport:
    """One ``twilio.rest.Client`` per event loop: its aiohttp session belongs to the loop it
    was made on, and a worker may run sends on more than one loop over its life."""

    def __init__(self, settings: Settings) -> None:
        if not settings.twilio_account_sid or not settings.twilio_auth_token:
            raise ConfigError("Twilio needs HERALD_TWILIO_ACCOUNT_SID and HERALD_TWILIO_AUTH_TOKEN")
        self.settings = settings
        self.account_sid: str = settings.twilio_account_sid
        self._auth_token: str = settings.twilio_auth_token
        self._ssl = provider_tls_context(settings)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: Any = None
        self._http: _HttpClient | None = None

    def account(self) -> Any:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            # A session left on another (finished) loop cannot be closed from this one; it is
            # dropped, and its sockets close when collected. aclose() on the loop that sent
            # avoids that.
            self._http = _HttpClient(self._ssl)
            client = Client(self.account_sid, self._auth_token, http_client=self._http)
            # TWILIO_EDGE / TWILIO_REGION from the environment would rewrite the host.
            client.edge = None
            client.region = None
            client.api.base_url = self.settings.twilio_url
            self._client = client
            self._loop = loop
        return self._client.api.v2010.accounts(self.account_sid)

    async def create(self, what: str, call: Callable[[], Awaitable[Any]]) -> Outcome:
        """Run one of the library's create calls and map what came back."""
        try:
            async with asyncio.timeout(self.settings.provider_timeout_s):
                answer = await call()
        except _TwilioAnswer as err:
            return error_outcome(err.status, err.text, (err.headers or {}).get("Retry-After"))
        except TimeoutError:
            return Outcome(
                status=DeliveryStatus.TIMEOUT,
                status_code=NO_ANSWER_STATUS,
                status_message=(
                    f"Twilio did not answer within {self.settings.provider_timeout_s:g}s"
                ),
            )
        except aiohttp.ClientError as err:
            return Outcome(
                status=DeliveryStatus.TEMPORARY_FAILURE,
                status_code=NO_CONNECTION_STATUS,
                status_message=f"could not reach Twilio: {type(err).__name__}: {err}"[:300],
            )
        except ValueError:
            # A 2xx whose body is not Twilio's JSON (a proxy's page): it may or may not have
            # been created, and sending again could duplicate it.
            return Outcome(
                status=DeliveryStatus.UNKNOWN_FAILURE,
                status_code=502,
                status_message=f"Twilio's answer to the {what} was not JSON",
            )
        instance = answer.data
        return Outcome(
            status=DeliveryStatus.SUCCESSFUL,
            status_code=int(answer.status_code),
            status_message=f"{what} {instance.status} at Twilio",
            message_id=instance.sid,
        )

    async def aclose(self) -> None:
        http, self._http, self._client = self._http, None, None
        loop, self._loop = self._loop, None
        if http is not None and loop is asyncio.get_running_loop():
            await http.close()


class _TwilioProvider:
    """What the SMS and voice adapters share: the transport and the default sender."""

    def __init__(self, settings: Settings) -> None:
        self._transport = _TwilioTransport(settings)
        self._default_sender = settings.default_origination_number

    async def aclose(self) -> None:
        await self._transport.aclose()


class TwilioSmsProvider(_TwilioProvider):
    """SMS and MMS as Twilio Messages."""

    name = "twilio-sms"
    channel_types = ("SMS",)

    async def send(self, delivery: OutgoingMessage, channel: ChannelConfig) -> Outcome:
        route = sms_route(delivery, channel, self.name, self._default_sender)
        if isinstance(route, Outcome):
            return route
        messages = self._transport.account().messages
        media = [route.content.media_url] if route.content.media_url else None
        return await self._transport.create(
            "Message",
            lambda: messages.create_with_http_info_async(
                to=route.to, from_=route.sender, body=route.content.body, media_url=media
            ),
        )


class TwilioVoiceProvider(_TwilioProvider):
    """Voice messages as Twilio Calls that say the body with inline TwiML."""

    name = "twilio-voice"
    channel_types = ("VOICE",)

    async def send(self, delivery: OutgoingMessage, channel: ChannelConfig) -> Outcome:
        checked = phone_delivery(delivery, VoiceContent, self.name)
        if isinstance(checked, Outcome):
            return checked
        content, to = checked
        caller = (content.origination_number or "").strip() or self._default_sender
        if not caller:
            return refused(
                "No caller number: set the message's OriginationNumber or "
                "HERALD_DEFAULT_ORIGINATION_NUMBER"
            )
        twiml = build_say_twiml(content)
        calls = self._transport.account().calls
        return await self._transport.create(
            "Call",
            lambda: calls.create_with_http_info_async(to=to, from_=caller, twiml=twiml),
        )
