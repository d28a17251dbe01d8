"""Each provider's check of a channel's credentials, by channel type, run on UpdateChannel.

The provider that will use the credentials is the one that knows what they must look like;
``worker.management.channels`` asks here instead of checking them itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from worker.core.vocabulary import APNS_TYPES, ChannelType
from worker.providers import fcm
from worker.providers.apns import credentials as apns_credentials

# channel type -> its provider's check (channel types whose provider takes no credentials of
# the channel's own are not here)
_CHECKS: dict[str, Callable[[Mapping[str, Any]], None]] = {
    **dict.fromkeys(APNS_TYPES, apns_credentials.check_channel_credentials),
    ChannelType.GCM: fcm.check_channel_credentials,
}


def check_channel_credentials(channel_type: str, values: Mapping[str, Any]) -> None:
    """Raise InvalidCredentials when the provider of ``channel_type`` could not use
    ``values`` (the channel's settings and secrets, wire names)."""
    check = _CHECKS.get(channel_type)
    if check is not None:
        check(values)
