"""Amazon Device Messaging adapter for the ADM channel.

Docs: https://developer.amazon.com/docs/adm/request-access-token.html (client-credentials
token, ``scope=messaging:push``) and https://developer.amazon.com/docs/adm/send-message.html
(send, response codes, 6 KB payload, canonical ``registrationID``).

The message is a data message whose ``data`` is the same flat ``pinpoint.*`` string map as FCM
(:func:`worker.providers.android.pinpoint_data`), which is what Pinpoint sent and what the Pinpoint
/ Amplify SDKs read on Fire OS.

``md5``: ADM verifies an ``md5`` it is given and computes one itself when it is absent, so
Herald passes Pinpoint's ``MD5`` through when set and otherwise leaves it to ADM rather than
risk sending a checksum ADM would reject with ``InvalidChecksum``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx

from worker.core.vocabulary import (
    ChannelConfig,
    DeliveryStatus,
    Outcome,
    PushNotification,
)
from worker.providers.android import pinpoint_data, raw_json_object, ttl_seconds
from worker.providers.base import OutcomeRule
from worker.providers.http import (
    OAuthPushProvider,
    excerpt,
    json_or_none,
    rule_outcome,
    token_answer,
)

CHANNEL_TYPE = "ADM"
# "Using ADM, you can send messages with a payload of up to 6KB in size."
ADM_PAYLOAD_LIMIT = 6 * 1024
ADM_TYPE_VERSION = "com.amazon.device.messaging.ADMMessage@1.0"
ADM_ACCEPT_TYPE = "com.amazon.device.messaging.ADMSendResult@1.0"


def build_adm_message(notification: PushNotification) -> dict[str, Any]:
    """The ADM send body (pure): ``data`` plus ``consolidationKey``, ``expiresAfter``, ``md5``.

    ``expiresAfter`` comes from ``ExpiresAfter`` (Pinpoint's ADM member, a string of seconds)
    or, failing that, ``TimeToLive``. ``RawContent`` is the whole body, sent verbatim.
    """
    if notification.raw_content is not None:
        return raw_json_object(notification.raw_content)
    options = notification.options
    message: dict[str, Any] = {"data": pinpoint_data(notification)}
    if options.get("ConsolidationKey"):
        message["consolidationKey"] = str(options["ConsolidationKey"])
    expires = ttl_seconds(options.get("ExpiresAfter", options.get("TimeToLive")), "ExpiresAfter")
    if expires is not None:
        message["expiresAfter"] = expires
    if options.get("MD5"):
        message["md5"] = str(options["MD5"])
    return message


def adm_payload_size(message: Mapping[str, Any]) -> int:
    """Bytes of the serialised ``data`` object, what ADM's 6 KB limit is about."""
    data = message.get("data", {})
    return len(json.dumps(data, separators=(",", ":"), ensure_ascii=False).encode())


P = DeliveryStatus.PERMANENT_FAILURE
T = DeliveryStatus.TEMPORARY_FAILURE
Q = DeliveryStatus.THROTTLED

# ADM ``reason`` values → outcome. Source: https://developer.amazon.com/docs/adm/send-message.html
# ("Response format": status codes and reasons).
ADM_ERRORS: dict[str, OutcomeRule] = {
    "InvalidRegistrationId": OutcomeRule(
        P,
        "400: the registration ID is invalid; stop sending to it",
        deactivate=True,
    ),
    "Unregistered": OutcomeRule(
        P,
        "the app instance behind the registration ID can no longer receive messages",
        deactivate=True,
    ),
    "InvalidData": OutcomeRule(P, "400: the data parameter is malformed"),
    "InvalidConsolidationKey": OutcomeRule(P, "400: the consolidationKey is invalid"),
    "InvalidExpiration": OutcomeRule(P, "400: expiresAfter is out of range"),
    "InvalidChecksum": OutcomeRule(P, "400: md5 does not match the data"),
    "InvalidType": OutcomeRule(P, "400: the X-Amzn-Type-Version header is not recognised"),
    "MessageTooLarge": OutcomeRule(P, "413: the payload exceeds 6 KB"),
    "AccessTokenExpired": OutcomeRule(
        P,
        "401: the access token was rejected (refreshed once already)",
    ),
    "MaxRateExceeded": OutcomeRule(Q, "429: the sender exceeded its rate; honour Retry-After"),
}
# Answers without a known reason, by HTTP status (same page).
ADM_STATUS: dict[int, OutcomeRule] = {
    400: OutcomeRule(P, "ADM rejected the message"),
    401: OutcomeRule(P, "ADM did not accept the access token"),
    410: OutcomeRule(P, "the registration ID is no longer registered", deactivate=True),
    413: OutcomeRule(P, "the payload exceeds 6 KB"),
    429: OutcomeRule(Q, "the sender exceeded its rate; honour Retry-After"),
    500: OutcomeRule(T, "ADM internal server error; retry after Retry-After"),
    503: OutcomeRule(T, "ADM temporarily unavailable; retry after Retry-After"),
}


def classify_adm_response(
    status_code: int, text: str, headers: Mapping[str, str], address: str
) -> Outcome:
    """Turn an ADM answer into an outcome (pure)."""
    body = json_or_none(text)
    if status_code == 200:
        canonical = body.get("registrationID") if isinstance(body, dict) else None
        return Outcome(
            status=DeliveryStatus.SUCCESSFUL,
            status_code=200,
            status_message=excerpt(text),
            message_id=headers.get("x-amzn-requestid"),
            updated_token=(
                str(canonical) if isinstance(canonical, str) and canonical != address else None
            ),
        )
    reason = str(body.get("reason") or "") if isinstance(body, dict) else ""
    rule = ADM_ERRORS.get(reason) or ADM_STATUS.get(status_code)
    if rule is None:
        if status_code >= 500:
            rule = OutcomeRule(T, f"ADM server error (HTTP {status_code})")
        else:
            rule = OutcomeRule(P, f"ADM refused the message (HTTP {status_code})")
    return rule_outcome(rule, CHANNEL_TYPE, status_code, text, headers, provider_error=reason)


@dataclass(frozen=True, slots=True)
class AdmClient:
    """The ADM channel's security profile credentials."""

    client_id: str
    client_secret: str


class AdmProvider(OAuthPushProvider[AdmClient]):
    """Sends ADM-channel pushes through Amazon Device Messaging."""

    name = "adm"
    channel_type = CHANNEL_TYPE
    service = "ADM"
    payload_limit = ADM_PAYLOAD_LIMIT

    def _credential(self, channel: ChannelConfig) -> AdmClient | Outcome:
        client_id = channel.credentials.get("ClientId") or channel.settings.get("ClientId")
        client_secret = channel.credentials.get("ClientSecret")
        if not client_id or not client_secret:
            return self._refused(400, "the ADM channel needs both ClientId and ClientSecret")
        return AdmClient(str(client_id), client_secret)

    def _build(self, notification: PushNotification, address: str) -> dict[str, Any]:
        return build_adm_message(notification)

    def _payload_size(self, message: Mapping[str, Any]) -> int:
        return adm_payload_size(message)

    def _too_large(self, size: int) -> Outcome:
        return self._refused(
            413, f"payload too large: {size} bytes of data, ADM allows {ADM_PAYLOAD_LIMIT}"
        )

    def _url(self, credential: AdmClient, address: str) -> str:
        registration = quote(address, safe="")
        return f"{self._settings.adm_url}/messaging/registrations/{registration}/messages"

    def _headers(self) -> dict[str, str]:
        return {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "X-Amzn-Type-Version": ADM_TYPE_VERSION,
            "X-Amzn-Accept-Type": ADM_ACCEPT_TYPE,
        }

    def _token_key(self, credential: AdmClient) -> str:
        return hashlib.sha256(
            f"{credential.client_id}\0{credential.client_secret}".encode()
        ).hexdigest()

    # ADM: on 401 AccessTokenExpired "request a new access token" — once (the default).

    def _classify(self, response: httpx.Response, address: str) -> Outcome:
        return classify_adm_response(
            response.status_code, response.text, response.headers, address
        )

    async def _fetch_token(self, credential: AdmClient) -> tuple[str, float] | Outcome:
        response = await self._http.get().post(
            f"{self._settings.adm_url}/auth/o2/token",
            data={
                "grant_type": "client_credentials",
                "scope": "messaging:push",
                "client_id": credential.client_id,
                "client_secret": credential.client_secret,
            },
        )
        return token_answer(
            response,
            channel_type=CHANNEL_TYPE,
            refused="Amazon's token endpoint refused the ADM channel's ClientId/ClientSecret",
        )
