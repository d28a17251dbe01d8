"""The Pinpoint REST routes, one module per resource, and the unsigned service routes."""

from fastapi import APIRouter

from api.routes import apps, channels, endpoints, events, messages, phone, service, tags

# In the order they are mounted: service routes first, as before the split.
ROUTERS: tuple[APIRouter, ...] = (
    service.router, apps.router, endpoints.router, channels.router, messages.router,
    events.router, phone.router, tags.router,
)
