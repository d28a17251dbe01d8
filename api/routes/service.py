"""Unsigned service routes: liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.state import Herald
from worker.results import health

router = APIRouter()


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
def readyz(request: Request) -> JSONResponse:
    herald: Herald = request.app.state.herald
    problems = health.problems(herald.settings, herald.sessions)
    if "database" in problems:
        return JSONResponse({"status": "unavailable", "problems": problems}, status_code=503)
    if problems:
        # Still ready: sends are accepted into the database and delivered once the broker
        # (or Redis) is back. Taking the API out of the load balancer would refuse them.
        return JSONResponse({"status": "degraded", "problems": problems})
    return JSONResponse({"status": "ready"})
