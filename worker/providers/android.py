"""What the Android push adapters (FCM, ADM on Fire OS, Baidu) build their payloads from.

Pinpoint sent Android apps a *data* message whose data is a flat string map of
``pinpoint.*`` keys (:func:`pinpoint_data`); the Pinpoint / Amplify SDKs turn it into the
notification on the device, whichever service carried it. Herald sends the same map, so those
apps keep working.
"""

from __future__ import annotations

import json
from typing import Any

from worker.core.vocabulary import PushNotification


class PayloadError(ValueError):
    """The rendered message cannot become a valid provider payload (a permanent failure)."""


def pinpoint_data(notification: PushNotification) -> dict[str, str]:
    """The flat ``pinpoint.*`` string map Pinpoint put in FCM/ADM data messages.

    ``Context`` keys come first so Pinpoint's own keys win a clash. ``Data`` travels as the
    JSON string ``pinpoint.jsonBody``. A deep link is given both as ``pinpoint.deeplink`` (what
    Amplify reads) and ``pinpoint.url`` (what the older AWS Mobile SDK opens).
    """
    data = {str(key): str(value) for key, value in notification.context.items()}
    if notification.title is not None:
        data["pinpoint.notification.title"] = notification.title
    if notification.body is not None:
        data["pinpoint.notification.body"] = notification.body
    action = (notification.action or "OPEN_APP").upper()
    if action == "URL" and notification.url:
        data["pinpoint.url"] = notification.url
    elif action == "DEEP_LINK" and notification.url:
        data["pinpoint.deeplink"] = notification.url
        data["pinpoint.url"] = notification.url
    else:
        data["pinpoint.openApp"] = "true"
    if notification.data:
        data["pinpoint.jsonBody"] = json.dumps(notification.data, separators=(",", ":"))
    data["pinpoint.notification.silentPush"] = "1" if notification.silent_push else "0"
    if notification.sound:
        data["pinpoint.notification.sound"] = notification.sound
    for option, key in _IMAGE_KEYS.items():
        value = notification.options.get(option)
        if value:
            data[key] = str(value)
    return data


_IMAGE_KEYS = {
    "ImageUrl": "pinpoint.notification.imageUrl",
    "ImageIconUrl": "pinpoint.notification.imageIconUrl",
    "SmallImageIconUrl": "pinpoint.notification.imageSmallIconUrl",
    "IconReference": "pinpoint.notification.icon",
}


def raw_json_object(raw_content: str) -> dict[str, Any]:
    """``RawContent`` parsed; it must be a JSON object."""
    try:
        value = json.loads(raw_content)
    except ValueError as exc:
        raise PayloadError(f"RawContent is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise PayloadError("RawContent must be a JSON object")
    return value


def ttl_seconds(value: Any, name: str) -> int | None:
    """A time to live option (``TimeToLive``, ``ExpiresAfter``) as whole seconds, if given."""
    if value is None or value == "":
        return None
    try:
        seconds = int(str(value).strip())
    except ValueError:
        raise PayloadError(f"{name} {value!r} is not a whole number of seconds") from None
    if seconds < 0:
        raise PayloadError(f"{name} must not be negative")
    return seconds
