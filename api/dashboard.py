"""``/dashboard``: a server-rendered view of the result table for whoever is on call.

A browser cannot sign requests with SigV4, so the dashboard has its own login: an operator
runs ``herald dashboard-link`` on a machine that has the configuration, and opens the
printed link. The link carries a token — an expiry and a nonce, HMAC-SHA256-signed with a key
derived from ``HERALD_SECRET_KEY`` — and ``/dashboard/login`` trades it for a session cookie
signed the same way (another purpose label, so one cannot stand in for the other): HttpOnly,
SameSite=Strict, scoped to ``/dashboard``, expiring after ``SESSION_S``, and Secure when the
browser reaches Herald over https (``HERALD_PUBLIC_URL`` says so when TLS ends at a proxy).
Every later page needs the cookie, or answers 401.

The signatures prove a token is Herald's; the ``dashboard_tokens`` table, shared by every API
process, adds what they cannot: a link signs in once (its nonce is recorded when used), and a
session lasts only while its row does (signing out deletes it).

The login answers with a page that moves on to ``/dashboard`` itself rather than an HTTP
redirect: a link opened from chat or mail is a cross-site navigation, and browsers withhold
SameSite=Strict cookies from every request of that navigation, redirects included; a
navigation started by Herald's own page is same-site, so the fresh cookie goes along.

Pages are Jinja templates (autoescaped) with the charts drawn as inline SVG on the server:
no build step, no script, nothing fetched from elsewhere (the CSP says so).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import jinja2
from fastapi import APIRouter, Depends, FastAPI, Query, Request, Response
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from api.state import Herald
from worker.core.config import Settings
from worker.core.models import DashboardToken
from worker.delivery import retention
from worker.results import reports

HERE = Path(__file__).resolve().parent
COOKIE = "herald_dashboard"
COOKIE_PATH = "/dashboard"
SESSION_S = 8 * 3600
DEFAULT_LINK_TTL_S = 3600
MAX_LINK_TTL_S = 7 * 24 * 3600
_LOGIN = "login"
_SESSION = "session"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # the login URL carries a token
    "Cache-Control": "no-store",
}

templates = Jinja2Templates(env=jinja2.Environment(
    loader=jinja2.FileSystemLoader(HERE / "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
))


# --- signed tokens ------------------------------------------------------------------------


def _key(settings: Settings) -> bytes:
    # Its own key, derived from HERALD_SECRET_KEY: a dashboard token can never be mistaken
    # for (or help forge) anything else that key protects.
    return hmac.new(settings.fernet_key(), b"herald dashboard v1", hashlib.sha256).digest()


def _mac(settings: Settings, purpose: str, body: str) -> str:
    digest = hmac.new(_key(settings), f"{purpose}:{body}".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def sign(settings: Settings, purpose: str, expires_at: int) -> str:
    body = f"{expires_at}.{secrets.token_urlsafe(12)}"
    return f"{body}.{_mac(settings, purpose, body)}"


@dataclass(frozen=True)
class Token:
    expires: int
    nonce: str


def verify(settings: Settings, purpose: str, token: str | None, now: float | None = None
           ) -> Token | None:
    """The token's expiry and nonce if it is ours, for this purpose and not expired; else
    None."""
    if not token or len(token) > 200:
        return None
    body, _, mac = token.rpartition(".")
    expires, _, nonce = body.partition(".")
    if not expires.isdigit() or not nonce:
        return None
    if not hmac.compare_digest(mac.encode(), _mac(settings, purpose, body).encode()):
        return None
    if int(expires) <= (time.time() if now is None else now):
        return None
    return Token(int(expires), nonce)


def _record(sessions: sessionmaker[Session], purpose: str, token: Token) -> bool:
    """Store a token's nonce; False if it is there already (a link used before)."""
    now = datetime.now(UTC)
    try:
        with sessions() as session, session.begin():
            session.execute(delete(DashboardToken).where(DashboardToken.expires_at < now))
            session.add(DashboardToken(
                nonce=token.nonce, purpose=purpose,
                expires_at=datetime.fromtimestamp(token.expires, UTC),
            ))
    except IntegrityError:
        return False
    return True


def _live_session(sessions: sessionmaker[Session], token: Token) -> bool:
    with sessions() as session:
        row = session.get(DashboardToken, token.nonce)
        return row is not None and row.purpose == _SESSION


def login_link(settings: Settings, base_url: str, ttl_s: int = DEFAULT_LINK_TTL_S) -> str:
    if not 0 < ttl_s <= MAX_LINK_TTL_S:
        raise ValueError(f"the link's lifetime must be 1 to {MAX_LINK_TTL_S} seconds")
    token = sign(settings, _LOGIN, int(time.time()) + ttl_s)
    return f"{base_url.rstrip('/')}/dashboard/login?token={quote(token)}"


class LoginRequired(Exception):
    """No valid dashboard session cookie."""


def _session(request: Request) -> Token:
    settings: Settings = request.app.state.herald.settings
    token = verify(settings, _SESSION, request.cookies.get(COOKIE))
    if token is None or not _live_session(_sessions(request), token):
        raise LoginRequired
    return token


SignedIn = Annotated[Token, Depends(_session)]


def _secure(request: Request, settings: Settings) -> bool:
    # Behind a proxy on another host the request arrives as http (uvicorn trusts forwarded
    # headers only from 127.0.0.1); the configured public URL says what the browser uses.
    public = settings.public_url or ""
    return request.url.scheme == "https" or public.startswith("https://")


# --- charts ---------------------------------------------------------------------------------

STATUS_COLORS = {
    "SUCCESSFUL": "#2e7d32",
    "PENDING": "#1e88e5",
    "TEMPORARY_FAILURE": "#f9a825",
    "THROTTLED": "#ef6c00",
    "TIMEOUT": "#8e24aa",
    "PERMANENT_FAILURE": "#c62828",
    "UNKNOWN_FAILURE": "#6d1b1b",
    "OPT_OUT": "#78909c",
    "DUPLICATE": "#b0bec5",
}
SERIES_PALETTE = ("#1565c0", "#00897b", "#6a1b9a", "#ef6c00", "#ad1457", "#558b2f",
                  "#4e342e", "#283593", "#00838f", "#9e9d24", "#37474f")


@dataclass
class Bar:
    x: float
    y: float
    width: float
    height: float
    color: str
    series: str
    count: int
    title: str


@dataclass
class Chart:
    id: str
    title: str
    width: int = 920
    height: int = 250
    bars: list[Bar] = field(default_factory=list)
    legend: list[tuple[str, str, int]] = field(default_factory=list)
    y_ticks: list[tuple[float, str]] = field(default_factory=list)
    x_ticks: list[tuple[float, str]] = field(default_factory=list)
    plot: tuple[float, float, float, float] = (0, 0, 0, 0)  # left, top, right, bottom
    total: int = 0


def _nice_ceiling(value: int) -> int:
    if value <= 4:
        return 4
    magnitude = 10 ** (len(str(value)) - 1)
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * magnitude:
            return int(step * magnitude)
    return value


def stacked_chart(
    chart_id: str,
    title: str,
    win: reports.Window,
    points: Iterable[reports.TimelinePoint],
    series_of: Callable[[reports.TimelinePoint], str],
    order: list[str],
    colors: dict[str, str],
) -> Chart:
    """Stacked bars, one per time bucket, one colour per series (status or channel)."""
    chart = Chart(chart_id, title)
    left, top, right, bottom = 56.0, 12.0, chart.width - 12.0, chart.height - 28.0
    chart.plot = (left, top, right, bottom)
    buckets = win.bucket_starts()
    index = {b: i for i, b in enumerate(buckets)}
    cells: dict[tuple[int, str], int] = {}
    totals: dict[str, int] = {}
    for point in points:
        slot = index.get(point.bucket)
        if slot is None:
            continue
        name = series_of(point)
        cells[slot, name] = cells.get((slot, name), 0) + point.count
        totals[name] = totals.get(name, 0) + point.count
    names = [n for n in order if n in totals] + sorted(n for n in totals if n not in order)
    palette = iter(SERIES_PALETTE)
    color = {n: colors.get(n) or next(palette, "#616161") for n in names}
    stack_max = max(
        (sum(cells.get((i, n), 0) for n in names) for i in range(len(buckets))), default=0
    )
    y_max = _nice_ceiling(stack_max)
    scale = (bottom - top) / y_max
    slot_w = (right - left) / max(1, len(buckets))
    bar_w = max(1.0, slot_w * 0.8)
    fmt = "%m-%d %H:%M" if win.seconds > 24 * 3600 else "%H:%M"
    for i, start in enumerate(buckets):
        base = bottom
        for name in names:
            count = cells.get((i, name), 0)
            if not count:
                continue
            height = count * scale
            base -= height
            chart.bars.append(Bar(
                x=round(left + i * slot_w + (slot_w - bar_w) / 2, 2), y=round(base, 2),
                width=round(bar_w, 2), height=round(height, 2), color=color[name],
                series=name, count=count,
                title=f"{start:%Y-%m-%d %H:%M} UTC · {name}: {count}",
            ))
    chart.legend = [(n, color[n], totals[n]) for n in names]
    chart.total = sum(totals.values())
    chart.y_ticks = [(round(bottom - v * scale, 2), f"{v:g}") for v in (0, y_max / 2, y_max)]
    every = max(1, len(buckets) // 6)
    chart.x_ticks = [
        (round(left + i * slot_w + slot_w / 2, 2), f"{b:{fmt}}")
        for i, b in enumerate(buckets) if i % every == 0
    ]
    return chart


# --- pages ----------------------------------------------------------------------------------

router = APIRouter(prefix="/dashboard", include_in_schema=False)


def _page(request: Request, name: str, status_code: int = 200, **context: Any) -> Response:
    return templates.TemplateResponse(
        request, name, {"windows": list(reports.WINDOWS), **context},
        status_code=status_code, headers=SECURITY_HEADERS,
    )


def _sessions(request: Request) -> sessionmaker[Session]:
    herald: Herald = request.app.state.herald
    return herald.sessions


def _fmt_time(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M:%S}Z" if value else ""


templates.env.filters["utc"] = _fmt_time


@router.get("/login", name="dashboard_login")
def login(request: Request, token: str = "") -> Response:
    settings: Settings = request.app.state.herald.settings
    link = verify(settings, _LOGIN, token)
    if link is None:
        return _page(request, "message.html", 401, title="Link invalid or expired",
                     message="This dashboard link is invalid or has expired. Run "
                             "`herald dashboard-link` for a new one.", signed_in=False)
    if not _record(_sessions(request), _LOGIN, link):
        return _page(request, "message.html", 401, title="Link already used",
                     message="This dashboard link has been used already; each link signs in "
                             "once. Run `herald dashboard-link` for a new one.",
                     signed_in=False)
    cookie = sign(settings, _SESSION, int(time.time()) + SESSION_S)
    session_token = verify(settings, _SESSION, cookie)
    assert session_token is not None
    _record(_sessions(request), _SESSION, session_token)
    response = _page(request, "login.html", signed_in=False)
    response.set_cookie(
        COOKIE, cookie, max_age=SESSION_S, path=COOKIE_PATH, httponly=True, samesite="strict",
        secure=_secure(request, settings),
    )
    return response


@router.post("/logout", name="dashboard_logout")
def logout(request: Request) -> Response:
    settings: Settings = request.app.state.herald.settings
    token = verify(settings, _SESSION, request.cookies.get(COOKIE))
    if token is not None:
        # The cookie may live on in the browser (or a copy elsewhere): the session ends here.
        with _sessions(request)() as session, session.begin():
            session.execute(delete(DashboardToken).where(DashboardToken.nonce == token.nonce))
    response = _page(request, "message.html", title="Signed out",
                     message="You are signed out of the Herald dashboard.", signed_in=False)
    response.delete_cookie(COOKIE, path=COOKIE_PATH, httponly=True, samesite="strict",
                           secure=_secure(request, settings))
    return response


@router.get("", name="dashboard")
def overview(
    request: Request,
    _session: SignedIn,
    window: str = reports.DEFAULT_WINDOW,
    app: Annotated[str | None, Query(max_length=32)] = None,
) -> Response:
    win = reports.window(window)
    with _sessions(request)() as session:
        points = reports.timeline(session, win, app)
        rates = reports.success_rates(session, win, app)
        failures = reports.latest_failures(session, win, app)
        oldest = retention.oldest_result(session)
    by_status = stacked_chart(
        "chart-status", "Deliveries by status", win, points, lambda p: p.status,
        list(STATUS_COLORS), STATUS_COLORS,
    )
    by_channel = stacked_chart(
        "chart-channel", "Deliveries by channel", win, points, lambda p: p.channel, [], {},
    )
    totals: dict[str, int] = {}
    for point in points:
        totals[point.status] = totals.get(point.status, 0) + point.count
    return _page(
        request, "overview.html", signed_in=True, win=win, app=app, charts=[by_status, by_channel],
        totals=totals, total=sum(totals.values()), rates=rates, failures=failures,
        failed=sum(totals.get(status, 0) for status in reports.FAILURES),
        kept_for=_kept_for(request.app.state.herald.settings.result_retention_s), oldest=oldest,
    )


def _kept_for(retention_s: int) -> str:
    """How long results are kept, in words (HERALD_RESULT_RETENTION_S)."""
    if retention_s <= 0:
        return "forever"
    if retention_s % 86400 == 0:
        days = retention_s // 86400
        return f"for {days} day{'s' if days != 1 else ''}"
    return f"for {retention_s / 3600:g} hours"


@router.get("/requests", name="dashboard_find_request")
def find_request(_session: SignedIn, id: str = "") -> Response:
    if not id.strip():
        return RedirectResponse("/dashboard", 303)
    return RedirectResponse(f"/dashboard/requests/{quote(id.strip(), safe='')}", 303)


@router.get("/requests/{request_id}", name="dashboard_request")
def request_view(request: Request, request_id: str, _session: SignedIn) -> Response:
    with _sessions(request)() as session:
        report = reports.request_report(session, request_id) if len(request_id) <= 64 else None
    if report is None:
        return _page(request, "message.html", 404, title="No such request",
                     message=f"There is no request {request_id}.", signed_in=True)
    return _page(request, "request.html", signed_in=True, report=report,
                 status_colors=STATUS_COLORS)


def install(app: FastAPI) -> None:
    app.include_router(router)
    app.mount("/dashboard/static", StaticFiles(directory=HERE / "static"),
              name="dashboard_static")

    @app.exception_handler(LoginRequired)
    async def _login_required(request: Request, _exc: LoginRequired) -> Response:
        return _page(request, "message.html", 401, title="Sign in required",
                     message="Open the dashboard through a link from "
                             "`herald dashboard-link`.", signed_in=False)
