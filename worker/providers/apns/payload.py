"""APNs payloads and requests, pure: Pinpoint's message to ``aps`` JSON, headers, refusals."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from worker.core.vocabulary import (
    APNS_VOIP_TYPES,
    DeliveryStatus,
    Outcome,
    OutgoingMessage,
    PushNotification,
)
from worker.providers.base import push_failure

APPLE_RESPONSES_DOC = (
    "https://developer.apple.com/documentation/usernotifications/"
    "handling-notification-responses-from-apns"
)
APPLE_REQUESTS_DOC = (
    "https://developer.apple.com/documentation/usernotifications/"
    "sending-notification-requests-to-apns"
)


# Apple: 4 KB for regular notifications, 5 KB for VoIP (payload size limits, APPLE_REQUESTS_DOC).
PAYLOAD_LIMIT = 4096
VOIP_PAYLOAD_LIMIT = 5120
COLLAPSE_ID_LIMIT = 64  # bytes


# Some push types need a topic suffix on the bundle id (APPLE_REQUESTS_DOC, apns-push-type).
_TOPIC_SUFFIXES = {
    "voip": ".voip",
    "complication": ".complication",
    "fileprovider": ".pushkit.fileprovider",
    "liveactivity": ".push-type.liveactivity",
    "location": ".location-query",
    "pushtotalk": ".voip-ptt",
}
_PRIORITIES = {"1": "1", "5": "5", "10": "10", "normal": "5", "high": "10"}
# A device token is hex; anything else would also let an address rewrite the request path.
_DEVICE_TOKEN = re.compile(r"[0-9a-fA-F]{8,200}")
_PUSH_TYPE = re.compile(r"[a-z]{1,32}")


# --- payload -----------------------------------------------------------------------------


def build_apns_payload(notification: PushNotification) -> dict[str, Any]:
    """The APNs payload Pinpoint built for ``notification`` (ignores ``raw_content``).

    ``{"aps": {...}, "data": {"pinpoint": {...}}}``: the ``Context`` keys are merged into
    ``data.pinpoint``, with ``Url`` as ``deeplink``, ``MediaUrl`` as ``mediaUrl`` and ``Data``
    as ``jsonBody`` (a JSON string). A silent push's ``aps`` is ``content-available`` alone:
    Apple requires that a background notification carry no key that interacts with the user
    (alert, sound, badge; "Pushing background updates to your app"); its content travels in
    ``Data``, as Pinpoint documents for silent pushes.

    Raises ValueError for an option APNs cannot carry (a non-integer ``Badge``).
    """
    options = notification.options
    media_url = options.get("MediaUrl") or None
    aps: dict[str, Any] = {}
    if notification.silent_push:
        aps["content-available"] = 1
    else:
        alert: dict[str, str] = {}
        if notification.title:
            alert["title"] = notification.title
        if notification.body:
            alert["body"] = notification.body
        if alert:
            aps["alert"] = alert
        if notification.sound:
            aps["sound"] = notification.sound
        badge = options.get("Badge")
        if badge is not None and badge != "":
            try:
                aps["badge"] = int(badge)
            except (TypeError, ValueError):
                raise ValueError(f"Badge must be an integer, not {badge!r}") from None
        if options.get("Category"):
            aps["category"] = str(options["Category"])
        if options.get("ThreadId"):
            aps["thread-id"] = str(options["ThreadId"])
        if media_url:
            # Lets the app's notification service extension download the media.
            aps["mutable-content"] = 1

    pinpoint: dict[str, Any] = dict(notification.context)
    if notification.url:
        pinpoint["deeplink"] = notification.url
    if media_url:
        pinpoint["mediaUrl"] = str(media_url)
    if notification.data:
        pinpoint["jsonBody"] = json.dumps(notification.data)
    payload: dict[str, Any] = {"aps": aps}
    if pinpoint:
        payload["data"] = {"pinpoint": pinpoint}
    return payload


def _encode(payload: Mapping[str, Any]) -> bytes:
    # Compact and UTF-8: every byte counts against Apple's 4 KB.
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


# --- request -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApnsRequest:
    """One notification on the wire, except ``:authority`` and ``authorization`` (the
    connection's)."""

    token: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


class Refused(Exception):
    """A request Herald will not send; ``outcome`` says why."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(outcome.status_message)
        self.outcome = outcome


def refuse(
    channel_type: str,
    status_code: int,
    message: str,
    *,
    reason: str = "",
    deactivate: bool = False,
) -> Refused:
    return Refused(
        push_failure(
            channel_type=channel_type,
            status=DeliveryStatus.PERMANENT_FAILURE,
            status_code=status_code,
            error_message=message,
            provider_error=reason,
            deactivate_endpoint=deactivate,
        )
    )


def push_type_for(notification: PushNotification, channel_type: str) -> str:
    """``apns-push-type``: the message's ``APNSPushType``, else voip on VoIP channels, else
    background for a silent push, else alert."""
    explicit = notification.options.get("APNSPushType")
    if explicit:
        return str(explicit).strip().lower()
    if channel_type in APNS_VOIP_TYPES:
        return "voip"
    return "background" if notification.silent_push else "alert"


def topic_for(bundle_topic: str, push_type: str) -> str:
    """``apns-topic`` for ``push_type``: the bundle id with the suffix Apple requires."""
    suffix = _TOPIC_SUFFIXES.get(push_type, "")
    if suffix and bundle_topic.endswith(suffix):
        return bundle_topic  # a VoIP certificate's own topic already ends in ".voip"
    return bundle_topic + suffix


def prepare_request(
    delivery: OutgoingMessage, bundle_topic: str | None, *, now: float | None = None
) -> ApnsRequest:
    """Headers and body for ``delivery``, or :class:`Refused` when APNs would reject it.

    ``bundle_topic`` is the channel's BundleId (for certificate auth, the certificate's topic
    when BundleId is unset; None lets APNs take the topic from the certificate).
    """
    channel_type = delivery.channel_type
    notification = delivery.content
    if not isinstance(notification, PushNotification):
        raise refuse(channel_type, 400, f"APNs cannot send {type(notification).__name__}")
    options = notification.options

    token = delivery.address.strip()
    if not _DEVICE_TOKEN.fullmatch(token):
        # What APNs answers for it (400 BadDeviceToken), without asking.
        raise refuse(
            channel_type,
            400,
            "The address is not an APNs device token (hexadecimal)",
            reason="BadDeviceToken",
            deactivate=True,
        )

    if notification.raw_content is not None:
        try:
            document = json.loads(notification.raw_content)
        except ValueError as exc:
            raise refuse(channel_type, 400, f"RawContent is not valid JSON: {exc}") from None
        if not isinstance(document, dict):
            raise refuse(channel_type, 400, "RawContent must be a JSON object")
        # Sent byte for byte as given: the sender chose this exact payload.
        body = notification.raw_content.encode()
    else:
        try:
            body = _encode(build_apns_payload(notification))
        except ValueError as exc:
            raise refuse(channel_type, 400, str(exc)) from None

    push_type = push_type_for(notification, channel_type)
    if not _PUSH_TYPE.fullmatch(push_type):
        raise refuse(channel_type, 400, f"APNSPushType {push_type!r} is not a push type")
    limit = VOIP_PAYLOAD_LIMIT if push_type == "voip" else PAYLOAD_LIMIT
    if len(body) > limit:
        raise refuse(
            channel_type,
            413,
            f"The payload is {len(body)} bytes; APNs accepts at most {limit}",
            reason="PayloadTooLarge",
        )

    headers: list[tuple[str, str]] = [("apns-id", delivery.delivery_id)]
    if bundle_topic:
        headers.append(("apns-topic", topic_for(bundle_topic, push_type)))
    headers.append(("apns-push-type", push_type))

    priority = options.get("Priority")
    if priority is None or priority == "":
        # Apple: background notifications must be sent with priority 5.
        headers.append(("apns-priority", "5" if push_type == "background" else "10"))
    else:
        value = _PRIORITIES.get(str(priority).strip().lower())
        if value is None:
            raise refuse(
                channel_type,
                400,
                f"Priority {priority!r} is not 5, 10, normal or high",
                reason="BadPriority",
            )
        headers.append(("apns-priority", value))

    ttl = options.get("TimeToLive")
    if ttl is not None and ttl != "":
        try:
            seconds = int(ttl)
        except (TypeError, ValueError):
            seconds = -1
        if seconds < 0:
            raise refuse(channel_type, 400, f"TimeToLive {ttl!r} is not a number of seconds")
        # 0 means "now or never" to APNs; anything else is an absolute expiry time.
        expiration = 0 if seconds == 0 else int(now if now is not None else time.time()) + seconds
        headers.append(("apns-expiration", str(expiration)))

    collapse_id = options.get("CollapseId")
    if collapse_id:
        collapse_id = str(collapse_id)
        if len(collapse_id.encode()) > COLLAPSE_ID_LIMIT:
            raise refuse(
                channel_type,
                400,
                f"CollapseId is {len(collapse_id.encode())} bytes; APNs accepts at most "
                f"{COLLAPSE_ID_LIMIT}",
                reason="BadCollapseId",
            )
        headers.append(("apns-collapse-id", collapse_id))

    headers.append(("content-type", "application/json"))
    return ApnsRequest(token=token, headers=tuple(headers), body=body)
