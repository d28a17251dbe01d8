"""Baidu Cloud Push (REST API 3.0) adapter for the BAIDU channel.

Docs: http://push.baidu.com/doc/restapi/restapi (``push/single_device``) and
http://push.baidu.com/doc/restapi/sdk_developer (common parameters, signature, errors).

One form-encoded ``POST {HERALD_BAIDU_URL}/rest/3.0/push/single_device`` per device, carrying
``apikey``, ``timestamp``, ``device_type`` (3, Android: Pinpoint's Baidu channel is Android),
``channel_id`` (the endpoint address), ``msg_type`` (1 notification, 0 message), ``msg`` (JSON),
``msg_expires`` (from ``TimeToLive``) and ``sign``.

``sign`` is Baidu's request signature::

    md5(urlencode(METHOD + URL + k1=v1 + k2=v2 … (sorted by key) + secret_key))

lower-case hex, where ``urlencode`` is PHP's (Baidu's reference SDK is PHP; its Python 2 SDK
uses ``urllib.quote_plus``, the same thing): space as ``+``, everything but ``A-Za-z0-9-_.``
percent-encoded. ``URL`` is the URL actually requested, so a configured gateway URL is signed
as requested.

The TTL goes in ``msg_expires`` (seconds, 0 to 604800): Baidu's ``expires`` is something else,
the signature's expiry time. ``deploy_status`` is not sent: Baidu uses it for iOS apps only.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote_plus, urlencode

from worker.core.vocabulary import (
    ChannelConfig,
    DeliveryStatus,
    Outcome,
    OutgoingMessage,
    PushNotification,
)
from worker.providers.android import PayloadError, pinpoint_data, raw_json_object, ttl_seconds
from worker.providers.base import OutcomeRule
from worker.providers.http import HttpPushProvider, excerpt, json_or_none, rule_outcome

CHANNEL_TYPE = "BAIDU"
SINGLE_DEVICE_PATH = "/rest/3.0/push/single_device"
DEVICE_TYPE_ANDROID = "3"
MSG_TYPE_MESSAGE = "0"
MSG_TYPE_NOTIFICATION = "1"
BAIDU_MAX_EXPIRES_S = 604_800  # msg_expires: "0~604800 (86400*7)"

USER_AGENT = (
    f"BCCS_SDK/3.0 ({platform.system()}; {platform.release()}; {platform.machine()}) "
    f"python/{platform.python_version()} (Baidu Push Server SDK V3.0.0) cli/Unknown Herald"
)


def php_urlencode(text: str) -> str:
    """PHP ``urlencode``: like ``quote_plus`` with nothing safe, except that ``~`` is encoded."""
    return quote_plus(text, safe="").replace("~", "%7E")


def baidu_sign(method: str, url: str, params: Mapping[str, str], secret_key: str) -> str:
    """Baidu's request signature over every parameter but ``sign`` (pure)."""
    gather = method.upper() + url
    for key in sorted(params):
        if key != "sign":
            gather += f"{key}={params[key]}"
    gather += secret_key
    return hashlib.md5(php_urlencode(gather).encode()).hexdigest()  # noqa: S324 - Baidu's scheme


def build_baidu_msg(notification: PushNotification) -> tuple[str, str]:
    """(``msg_type``, ``msg``) for one notification (pure).

    A notification is ``{"title", "description", "custom_content"}`` with the ``pinpoint.*``
    map (``Data`` as ``pinpoint.jsonBody``, the ``Context`` keys) in ``custom_content``, and
    ``open_type`` 1 + ``url`` for a URL action so the Baidu client opens it itself. A silent
    push is a message whose ``msg`` is that same map. ``RawContent`` is sent verbatim as
    ``msg``: a notification when it has Baidu's required ``description``, else a message.
    """
    if notification.raw_content is not None:
        raw = raw_json_object(notification.raw_content)
        kind = MSG_TYPE_NOTIFICATION if "description" in raw else MSG_TYPE_MESSAGE
        return kind, notification.raw_content
    data = pinpoint_data(notification)
    if notification.silent_push:
        return MSG_TYPE_MESSAGE, json.dumps(data, separators=(",", ":"), ensure_ascii=False)
    msg: dict[str, Any] = {}
    if notification.title is not None:
        msg["title"] = notification.title
    msg["description"] = notification.body or ""
    if (notification.action or "").upper() == "URL" and notification.url:
        msg["open_type"] = 1
        msg["url"] = notification.url
    msg["custom_content"] = data
    return MSG_TYPE_NOTIFICATION, json.dumps(msg, separators=(",", ":"), ensure_ascii=False)


def build_baidu_params(
    notification: PushNotification, channel_id: str, api_key: str, timestamp: int
) -> dict[str, str]:
    """The ``push/single_device`` form parameters, ``sign`` excluded (pure)."""
    msg_type, msg = build_baidu_msg(notification)
    params = {
        "apikey": api_key,
        "timestamp": str(timestamp),
        "device_type": DEVICE_TYPE_ANDROID,
        "channel_id": channel_id,
        "msg_type": msg_type,
        "msg": msg,
    }
    seconds = ttl_seconds(notification.options.get("TimeToLive"), "TimeToLive")
    if seconds is not None:
        params["msg_expires"] = str(min(seconds, BAIDU_MAX_EXPIRES_S))
    return params


P = DeliveryStatus.PERMANENT_FAILURE
T = DeliveryStatus.TEMPORARY_FAILURE
Q = DeliveryStatus.THROTTLED

# Baidu Cloud Push error_code → outcome. Source: Baidu Push error code list (push.baidu.com,
# "错误码"; the same names ship in Baidu's SDKs' PushConstants). Note 30607 is "Channel Token
# Timeout"; the request-rate rejection is 30699.
BAIDU_ERRORS: dict[int, OutcomeRule] = {
    30600: OutcomeRule(T, "Internal Server Error"),
    30601: OutcomeRule(P, "Method Not Allowed"),
    30602: OutcomeRule(P, "Request Params Not Valid"),
    30603: OutcomeRule(P, "Authentication Failed: check the BAIDU channel's ApiKey/SecretKey"),
    30604: OutcomeRule(P, "Quota Use Up Payment Required"),
    30605: OutcomeRule(P, "Data Required Not Found"),
    30606: OutcomeRule(P, "Request Time Expires Timeout: check the server clock"),
    30607: OutcomeRule(P, "Channel Token Timeout"),
    30608: OutcomeRule(
        P, "Bind Relation Not Found: the channel_id is not bound to this app", deactivate=True
    ),
    30609: OutcomeRule(P, "Bind Number Too Many"),
    30612: OutcomeRule(P, "Application Forbidden, Need Whitelist Authorization"),
    30613: OutcomeRule(P, "App Need Inited First In Push-console"),
    30616: OutcomeRule(P, "Application Do Not Have Unicast Capability"),
    30618: OutcomeRule(P, "Application Is Not Approved, Can Not Use The Push Service"),
    30699: OutcomeRule(Q, "Requests Are Too Frequent To Be Temporarily Rejected"),
}


def _names_channel_id(message: str) -> bool:
    text = message.lower().replace(" ", "_")
    return "channel_id" in text or "channelid" in text


def classify_baidu_response(status_code: int, text: str, headers: Mapping[str, str]) -> Outcome:
    """Turn a Baidu answer into an outcome (pure)."""
    body = json_or_none(text)
    if not isinstance(body, dict):
        body = {}
    params = body.get("response_params")
    if status_code == 200 and "error_code" not in body and isinstance(params, dict):
        msg_id = params.get("msg_id")
        return Outcome(
            status=DeliveryStatus.SUCCESSFUL,
            status_code=200,
            status_message=excerpt(text),
            message_id=str(msg_id) if msg_id is not None else None,
        )
    try:
        code = int(body.get("error_code", 0))
    except (TypeError, ValueError):
        code = 0
    error_msg = str(body.get("error_msg") or "")
    rule = BAIDU_ERRORS.get(code)
    if rule is None:
        if status_code == 429:
            rule = OutcomeRule(Q, "Baidu throttled the request")
        elif status_code >= 500 or status_code == 200:
            rule = OutcomeRule(T, f"Baidu server error (HTTP {status_code})")
        else:
            rule = OutcomeRule(P, f"Baidu refused the request (HTTP {status_code})")
    # An invalid / unknown channel id is reported as a parameter or not-found error that names
    # it; that address will never work again.
    return rule_outcome(
        rule,
        CHANNEL_TYPE,
        status_code,
        text,
        headers,
        provider_error=str(code) if code else "",
        detail=error_msg,
        deactivate=code in (30602, 30605) and _names_channel_id(error_msg),
    )


class BaiduProvider(HttpPushProvider):
    """Sends BAIDU-channel pushes through Baidu Cloud Push."""

    name = "baidu"
    channel_type = CHANNEL_TYPE
    service = "Baidu"

    async def send(self, delivery: OutgoingMessage, channel: ChannelConfig) -> Outcome:
        notification = self._notification(delivery)
        api_key = channel.credentials.get("ApiKey") or channel.settings.get("ApiKey")
        secret_key = channel.credentials.get("SecretKey")
        if not api_key or not secret_key:
            return self._refused(400, "the BAIDU channel needs both ApiKey and SecretKey")
        try:
            params = build_baidu_params(
                notification, delivery.address, str(api_key), int(time.time())
            )
        except PayloadError as exc:
            return self._refused(400, str(exc))
        url = self._settings.baidu_url + SINGLE_DEVICE_PATH
        params["sign"] = baidu_sign("POST", url, params, secret_key)
        return await self._answer(self._push(url, params))

    async def _push(self, url: str, params: Mapping[str, str]) -> Outcome:
        response = await self._http.get().post(
            url,
            content=urlencode(params).encode(),
            headers={
                "Content-Type": "application/x-www-form-urlencoded;charset=utf-8",
                "User-Agent": USER_AGENT,
            },
        )
        return classify_baidu_response(response.status_code, response.text, response.headers)
