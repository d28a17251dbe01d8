"""Routing on the path as the client encoded it (DESIGN.md §3: a label is one segment).

Starlette routes on ``scope["path"]``, which the server has already percent-decoded: an
endpoint id ``a/b`` sent as ``a%2Fb`` becomes two segments and matches no route. Every
Pinpoint route is therefore a ``RawPathRoute``: it matches its pattern against the raw path
(``scope["raw_path"]``, still encoded, so ``{label}`` — ``[^/]+`` — takes exactly one
segment) and percent-decodes each label it captured. Only the matching changes; the rest of
the request (the signature over the raw path, the handlers) sees what it always saw. A route
class rather than a middleware that rewrites ``scope["path"]``: a rewritten path would need a
placeholder for the decoded ``/`` that every later reader would have to know about.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

from fastapi import APIRouter
from fastapi.routing import APIRoute
from starlette.routing import Match
from starlette.types import Scope


def raw_path(scope: Scope) -> str:
    """The request path as received, without the query; the decoded path when the server
    gave no raw path."""
    raw = scope.get("raw_path")
    if not raw:
        return str(scope["path"])
    return bytes(raw).decode("latin-1").split("?", 1)[0]


class RawPathRoute(APIRoute):
    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or not scope.get("raw_path"):
            return super().matches(scope)
        match, child = super().matches({**scope, "path": raw_path(scope), "root_path": ""})
        if match is not Match.NONE:
            child["path_params"] = {
                key: unquote(value) if isinstance(value, str) else value
                for key, value in child["path_params"].items()
            }
        return match, child


def pinpoint_router(**kwargs: Any) -> APIRouter:
    """A router whose routes match on the raw path."""
    return APIRouter(route_class=RawPathRoute, **kwargs)
