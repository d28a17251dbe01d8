"""/dashboard in a real browser: Debian's Chromium driven by Playwright, against the live
stack, after boto3 sends that succeed and one that the SMTP server refuses."""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from playwright.sync_api import Browser, Page, sync_playwright

from api.dashboard import COOKIE, sign
from tests.fakes.smtp import FakeSmtp
from tests.stack import ARTIFACTS, SECRET_KEY, Stack
from worker.core.config import Settings

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), "Debian's chromium is missing: run scripts/ensure-browser.sh"
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def dashboard_link(stack: Stack, api_url: str, *args: str) -> str:
    link = stack.run("dashboard-link", "--url", api_url, *args).stdout.strip()
    assert link.startswith(f"{api_url}/dashboard/login?token="), link
    return link


def counts(page: Page, selector: str) -> int:
    return int(sum(int(n) for n in page.eval_on_selector_all(
        selector, "els => els.map(e => e.getAttribute('data-count'))")))


def test_dashboard_shows_the_deliveries_the_failure_and_the_request(
    stack: Stack, api_url: str, client: Any, smtp: FakeSmtp, browser: Browser
) -> None:
    tag = uuid.uuid4().hex[:8]
    # An app name that would be markup if anything were left unescaped.
    name = f"<img src=x alt=pwned-{tag}>"
    app_id = client.create_app(CreateApplicationRequest={"Name": name})[
        "ApplicationResponse"]["Id"]
    client.update_email_channel(ApplicationId=app_id, EmailChannelRequest={
        "FromAddress": "ops@herald.test", "Identity": "herald.test", "Enabled": True})
    bounce = f"gone-{tag}@dash.test"
    client.update_endpoints_batch(ApplicationId=app_id, EndpointBatchRequest={"Item": [
        {"Id": "ada-mail", "ChannelType": "EMAIL", "Address": f"ada-{tag}@dash.test",
         "User": {"UserId": "ada"}},
        {"Id": "ada-old", "ChannelType": "EMAIL", "Address": bounce, "User": {"UserId": "ada"}},
        {"Id": "bob-mail", "ChannelType": "EMAIL", "Address": f"bob-{tag}@dash.test",
         "User": {"UserId": "bob"}},
    ]})
    smtp.script(bounce, [550])
    sent = client.send_users_messages(ApplicationId=app_id, SendUsersMessageRequest={
        "MessageConfiguration": {"EmailMessage": {"SimpleEmail": {
            "Subject": {"Data": "Dashboard"}, "TextPart": {"Data": "Seen in a browser."}}}},
        "Users": {"ada": {}, "bob": {}},
    })["SendUsersMessageResponse"]
    request_id = sent["RequestId"]
    assert sent["Result"]["ada"]["ada-old"]["StatusCode"] == 550
    # The answer may come before every row is final on a busy machine; the charts count
    # final outcomes.
    with sa.create_engine(stack.database_url).connect() as conn:
        deadline = time.monotonic() + 30
        while conn.execute(sa.text("select count(*) from deliveries where request_id = :r "
                                "and not final"), {"r": request_id}).scalar_one():
            assert time.monotonic() < deadline, "rows never became final"
            time.sleep(0.1)
            conn.rollback()

    page = browser.new_page(viewport={"width": 1300, "height": 900})
    page.goto(dashboard_link(stack, api_url))
    page.wait_for_url(f"{api_url}/dashboard")
    page.goto(f"{api_url}/dashboard?window=1h&app={app_id}")

    # The charts: one bar segment per (bucket, series), counts carried on the elements.
    assert page.locator("svg#chart-status").is_visible()
    assert counts(page, "svg#chart-status rect.bar[data-series=SUCCESSFUL]") == 2
    assert counts(page, "svg#chart-status rect.bar[data-series=PERMANENT_FAILURE]") == 1
    assert counts(page, "svg#chart-channel rect.bar[data-series=EMAIL]") == 3
    assert page.locator(
        "ul[data-chart=chart-status] li[data-series=PERMANENT_FAILURE]").inner_text().endswith(
        "1")
    assert page.locator("#total").inner_text() == "3"

    rate = page.locator(f"#success-rates tr[data-app='{app_id}'][data-channel=EMAIL]")
    assert re.search(r"\b66\.7%", rate.inner_text()), rate.inner_text()
    assert name in rate.inner_text()  # shown as text...
    assert page.locator(f"img[alt=pwned-{tag}]").count() == 0  # ...never as markup

    failure = page.locator(f"#failures tr[data-request='{request_id}']")
    assert failure.count() == 1
    text = failure.inner_text()
    assert "550" in text and "No such user" in text and "PERMANENT_FAILURE" in text, text
    assert bounce in text
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    failure.locator("a").first.click()
    page.wait_for_url(f"{api_url}/dashboard/requests/{request_id}")
    assert page.locator("#request-id").inner_text() == request_id
    recipients = page.locator("#recipients tr.recipient")
    assert recipients.count() == 3
    assert {recipients.nth(i).get_attribute("data-status") for i in range(3)} == {
        "SUCCESSFUL", "PERMANENT_FAILURE"}
    bounced = page.locator("#recipients tr.recipient[data-endpoint=ada-old]")
    assert bounced.get_attribute("data-status") == "PERMANENT_FAILURE"
    attempt = page.locator("#recipients tr.attempts").filter(has_text="No such user")
    assert attempt.locator("tr.attempt").count() == 1
    assert "smtp" in attempt.inner_text() and "550" in attempt.inner_text()
    page.screenshot(path=str(ARTIFACTS / "dashboard-request.png"), full_page=True)
    page.close()


def test_a_link_opened_from_another_site_signs_in(
    stack: Stack, api_url: str, browser: Browser
) -> None:
    """A link clicked in chat or mail: a cross-site navigation, which browsers send without
    SameSite=Strict cookies, redirects included. The login page moves on by itself."""
    link = dashboard_link(stack, api_url)
    context = browser.new_context()
    page = context.new_page()
    page.set_content(f'<a id="go" href="{link}">open the dashboard</a>')
    page.click("#go")
    page.wait_for_url(f"{api_url}/dashboard")
    assert page.locator("svg#chart-status").count() == 1
    cookie = next(c for c in context.cookies() if c["name"] == COOKIE)
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/dashboard"
    context.close()


def test_dashboard_refuses_missing_tampered_expired_and_foreign_credentials(
    stack: Stack, api_url: str
) -> None:
    for path in ("/dashboard", "/dashboard/requests/anything", "/dashboard/requests?id=x"):
        response = httpx.get(api_url + path)
        assert response.status_code == 401, path
        assert response.headers["content-type"].startswith("text/html")
        assert "Sign in required" in response.text

    link = dashboard_link(stack, api_url, "--ttl", "600")
    token = link.split("token=", 1)[1]
    flipped = token[:-1] + ("A" if token[-1] != "A" else "B")
    later = str(int(token.split(".")[0]) + 3600)
    ours = Settings(secret_key=stack.env["HERALD_SECRET_KEY"], database_url="sqlite://")
    theirs = Settings(secret_key="Zq8Lw3Nv6Tb1Hx4Ck7Pm2Jr5Gd9Fs0Ya", database_url="sqlite://")
    refused = {
        "tampered signature": flipped,
        "extended expiry": ".".join([later, *token.split(".")[1:]]),
        "expired": sign(ours, "login", int(time.time()) - 1),
        "signed with another key": sign(theirs, "login", int(time.time()) + 600),
        "a session token is not a login token": sign(ours, "session", int(time.time()) + 600),
        "empty": "",
    }
    for reason, bad in refused.items():
        response = httpx.get(f"{api_url}/dashboard/login", params={"token": bad})
        assert response.status_code == 401, reason
        assert "set-cookie" not in response.headers, reason
        assert "invalid or has expired" in response.text

    for reason, cookie in {
        "a login token is not a session": sign(ours, "login", int(time.time()) + 600),
        "expired session": sign(ours, "session", int(time.time()) - 1),
        "session signed with another key": sign(theirs, "session", int(time.time()) + 600),
    }.items():
        response = httpx.get(api_url + "/dashboard", cookies={COOKIE: cookie})
        assert response.status_code == 401, reason

    with httpx.Client() as browser_like:
        login = browser_like.get(link)
        assert login.status_code == 200
        set_cookie = login.headers["set-cookie"]
        for attribute in ("HttpOnly", "SameSite=strict", "Path=/dashboard", "Max-Age="):
            assert attribute in set_cookie, set_cookie
        assert login.headers["Referrer-Policy"] == "no-referrer"
        assert "default-src 'none'" in login.headers["Content-Security-Policy"]
        assert browser_like.get(api_url + "/dashboard").status_code == 200
        browser_like.post(api_url + "/dashboard/logout")
        assert browser_like.get(api_url + "/dashboard").status_code == 401


def test_dashboard_link_rejects_a_bad_lifetime(stack: Stack, api_url: str) -> None:
    with pytest.raises(subprocess.CalledProcessError) as failed:
        stack.run("dashboard-link", "--url", api_url, "--ttl", "0")
    assert "lifetime" in failed.value.stderr


def test_timeline_buckets_rows_on_the_embedded_sqlite_database(tmp_path: Path) -> None:
    """`herald serve` keeps the result table in SQLite: the same report, another dialect."""
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import insert

    from worker.core.db import session_factory
    from worker.core.migrate import upgrade
    from worker.core.models import Application, Delivery, SendRequest
    from worker.results import reports

    settings = Settings(data_dir=tmp_path / "data", secret_key=SECRET_KEY)
    upgrade(settings)
    until = datetime(2026, 11, 1, 12, 0, 30, tzinfo=UTC)
    win = reports.window("1h", until=until)
    sessions = session_factory(settings)
    with sessions() as session, session.begin():
        session.add(Application(id="a1", name="embedded", tags={}, created_at=until))
        session.add(SendRequest(id="r1", app_id="a1", kind="users", payload={},
                                   recipients=3, created_at=until))
        session.flush()
        session.execute(insert(Delivery), [
            {"request_id": "r1", "app_id": "a1", "recipient": recipient, "channel_type": "SMS",
             "delivery_status": status, "attempts": 1, "final": True, "created_at": created,
             "updated_at": created}
            for recipient, status, created in (
                ("e1", "SUCCESSFUL", until - timedelta(minutes=5, seconds=20)),
                ("e2", "SUCCESSFUL", until - timedelta(minutes=4, seconds=50)),
                ("e3", "PERMANENT_FAILURE", until - timedelta(minutes=5, seconds=5)),
                ("e4", "SUCCESSFUL", until - timedelta(hours=2)),  # outside the window
            )
        ])
    with sessions() as session:
        points = reports.timeline(session, win)
        rates = reports.success_rates(session, win)
    bucket = datetime(2026, 11, 1, 11, 55, tzinfo=UTC)
    assert sorted((p.bucket, p.status, p.count) for p in points) == [
        (bucket, "PERMANENT_FAILURE", 1), (bucket, "SUCCESSFUL", 2)]
    assert [(r.app_name, r.channel, r.successful, r.failed) for r in rates] == [
        ("embedded", "SMS", 2, 1)]


# --- issue 14: tokens masked, one-time links, sign-out that ends the session, Secure ---------


@contextlib.contextmanager
def _signed_in(stack: Stack, api_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url) as client:
        assert client.get(dashboard_link(stack, api_url)).status_code == 200
        yield client


def test_a_login_link_signs_in_once(stack: Stack, api_url: str) -> None:
    link = dashboard_link(stack, api_url)
    assert httpx.get(link).status_code == 200
    again = httpx.get(link)
    assert again.status_code == 401 and "set-cookie" not in again.headers
    assert "used already" in again.text


def test_signing_out_ends_the_session_everywhere(stack: Stack, api_url: str) -> None:
    with _signed_in(stack, api_url) as browser_like:
        copied = browser_like.cookies[COOKIE]  # e.g. left in another browser, or stolen
        assert httpx.get(api_url + "/dashboard", cookies={COOKIE: copied}).status_code == 200
        browser_like.post("/dashboard/logout")
    assert httpx.get(api_url + "/dashboard", cookies={COOKIE: copied}).status_code == 401


def test_the_request_page_never_shows_a_whole_device_token(
    stack: Stack, api_url: str, client: Any, app_id: str
) -> None:
    token = "f" * 24 + uuid.uuid4().hex  # no APNs channel: the row fails, with its address
    request_id = client.send_messages(ApplicationId=app_id, MessageRequest={
        "Addresses": {token: {"ChannelType": "APNS"}},
        "MessageConfiguration": {"DefaultPushNotificationMessage": {"Body": "b"}},
    })["MessageResponse"]["RequestId"]
    with _signed_in(stack, api_url) as browser_like:
        page = browser_like.get(f"/dashboard/requests/{request_id}")
    assert page.status_code == 200
    assert token not in page.text
    assert token[-4:] in page.text  # enough to recognise it


def test_the_cookie_is_secure_when_the_public_url_is_https(tmp_path: Path) -> None:
    """TLS ends at a proxy on another host: Herald sees http, the browser uses https."""
    from fastapi.testclient import TestClient

    from api.app import create_app
    from api.dashboard import login_link
    from worker.core.migrate import upgrade

    settings = Settings(data_dir=tmp_path / "data", secret_key=SECRET_KEY,
                        public_url="https://herald.example.com")
    upgrade(settings)
    app = create_app(settings, enqueue=lambda _request_id, _ids: None)
    with TestClient(app, base_url="http://api-1.internal:8080") as browser_like:
        response = browser_like.get(login_link(settings, "http://api-1.internal:8080"))
    assert response.status_code == 200
    assert "Secure" in response.headers["set-cookie"]
