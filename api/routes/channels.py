"""Channels: GetChannels and Update/Get/Delete of each channel type."""

from __future__ import annotations

from typing import Any

from api.auth import Authed
from api.routing import pinpoint_router
from worker import wire
from worker.core.config import Settings
from worker.core.models import Channel
from worker.management import channels

router = pinpoint_router()


def _channel_response(channel: Channel, settings: Settings) -> wire.ChannelResponse:
    secrets_present = channels.secret_names(channel, settings)
    return channels.channel_response(channel, secrets_present=secrets_present)


@router.get("/v1/apps/{app_id}/channels")
def get_channels(app_id: str, call: Authed) -> dict[str, Any]:
    with call.herald.transaction() as session:
        found = channels.list_channels(session, app_id)
        return wire.ChannelsResponse(
            channels={c.channel_type: _channel_response(c, call.herald.settings) for c in found}
        ).to_wire()


@router.put("/v1/apps/{app_id}/channels/{kind}")
def update_channel(app_id: str, kind: str, call: Authed) -> dict[str, Any]:
    channels.require_kind(kind)
    body = call.json()
    with call.herald.transaction() as session:
        channel = channels.update_channel(session, app_id, kind, body, call.herald.settings)
        response = _channel_response(channel, call.herald.settings)
    call.herald.channel_cache.clear()
    return response.to_wire()


@router.get("/v1/apps/{app_id}/channels/{kind}")
def get_channel(app_id: str, kind: str, call: Authed) -> dict[str, Any]:
    channels.require_kind(kind)
    with call.herald.transaction() as session:
        channel = channels.get_channel(session, app_id, kind)
        return _channel_response(channel, call.herald.settings).to_wire()


@router.delete("/v1/apps/{app_id}/channels/{kind}")
def delete_channel(app_id: str, kind: str, call: Authed) -> dict[str, Any]:
    channels.require_kind(kind)
    with call.herald.transaction() as session:
        channel = channels.delete_channel(session, app_id, kind)
        response = channels.channel_response(channel, secrets_present=frozenset())
    call.herald.channel_cache.clear()
    return response.to_wire()
