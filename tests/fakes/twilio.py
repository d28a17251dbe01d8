"""A fake Twilio REST API on 127.0.0.1: Messages and Calls, with Twilio's JSON shapes.

It checks HTTP basic auth (account SID, auth token) the way Twilio does (401, code 20003),
answers ``POST /2010-04-01/Accounts/{sid}/Messages.json`` and ``.../Calls.json`` with 201 and
a resource whose ``sid`` is ``SM…`` / ``CA…`` (34 characters), records every request with its
form fields, and can be scripted, per ``To`` number or for all, to answer with any error
Twilio documents (``{"code", "message", "more_info", "status"}``) or to hang.

    with FakeTwilio() as fake:
        settings = Settings(twilio_url=fake.url, twilio_account_sid=fake.account_sid,
                            twilio_auth_token=fake.auth_token)
        fake.fail(400, 21211, to="+15550000001")
        fake.fail(429, 20429, retry_after=7, times=1)
        fake.hang(to="+15550000002")
        fake.reply_raw(502, "<html>Bad Gateway</html>")
        ...
        assert fake.messages[0].field("Body") == "hello"
"""

from __future__ import annotations

import base64
import json
import secrets
import ssl
import threading
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from tests.fakes.tls import TlsFiles

DEFAULT_ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
DEFAULT_AUTH_TOKEN = "fake-twilio-auth-token"
API_VERSION = "2010-04-01"

# Twilio's own wording for the errors tests script most (https://www.twilio.com/docs/errors/).
ERROR_MESSAGES = {
    20003: "Authenticate",
    20404: "The requested resource was not found",
    20429: "Too Many Requests",
    20500: "Internal Server Error",
    20503: "Service Unavailable",
    21211: "The 'To' number is not a valid phone number.",
    21408: "Permission to send an SMS has not been enabled for the region indicated by the "
    "'To' number",
    21603: "A 'From' phone number is required.",
    21604: "A 'To' phone number is required.",
    21602: "Message body is required.",
    21205: "Url parameter is required.",
    21610: "Attempt to send to unsubscribed recipient",
    21612: "The 'To' phone number is not currently reachable via SMS",
    21614: "'To' number is not a valid mobile number",
}


@dataclass(frozen=True)
class TwilioRequest:
    """One request the fake received."""

    method: str
    path: str
    resource: str  # "Messages", "Calls" or "" for anything else
    account_sid: str | None  # from the path
    auth: tuple[str, str] | None  # HTTP basic credentials
    form: dict[str, list[str]]
    headers: dict[str, str]

    def field(self, name: str) -> str | None:
        values = self.form.get(name)
        return values[0] if values else None


@dataclass
class _Scripted:
    status: int
    code: int | None
    message: str | None
    retry_after: float | None
    hang: bool
    times: int | None  # None: every time
    raw_body: str | None = None  # sent as text/html instead of Twilio's error JSON


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    requests: list[TwilioRequest] = field(default_factory=list)
    scripts: dict[str | None, list[_Scripted]] = field(default_factory=dict)
    release: threading.Event = field(default_factory=threading.Event)


class FakeTwilio:
    def __init__(
        self,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        tls: TlsFiles | None = None,
    ) -> None:
        """``tls``: serve HTTPS with this certificate (trust ``tls.ca_path`` in the client)."""
        self.account_sid = account_sid
        self.auth_token = auth_token
        self.tls = tls
        self._state = _State()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> str:
        fake = self

        class Handler(_Handler):
            owner = fake

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.block_on_close = False
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self.tls.cert_path, self.tls.key_path)
            server.socket = context.wrap_socket(server.socket, server_side=True)
        self._server = server
        self._state.release.clear()
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self._state.release.set()  # let hanging handlers go
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> FakeTwilio:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        assert self._server is not None, "FakeTwilio is not started"
        host, port = self._server.server_address[:2]
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{host!s}:{port}"

    # -- scripting -----------------------------------------------------------------------

    def fail(
        self,
        status: int,
        code: int | None = None,
        message: str | None = None,
        *,
        to: str | None = None,
        retry_after: float | None = None,
        times: int | None = None,
    ) -> None:
        """Answer requests (to ``to``, or all) with Twilio's error JSON."""
        self._script(to, _Scripted(status, code, message, retry_after, False, times))

    def hang(self, *, to: str | None = None, times: int | None = None) -> None:
        """Never answer (until :meth:`stop`)."""
        self._script(to, _Scripted(0, None, None, None, True, times))

    def reply_raw(
        self, status: int, body: str, *, to: str | None = None, times: int | None = None
    ) -> None:
        """Answer with a non-JSON body, as a proxy or load balancer in front would."""
        self._script(to, _Scripted(status, None, None, None, False, times, raw_body=body))

    def reset(self) -> None:
        with self._state.lock:
            self._state.scripts.clear()
            self._state.requests.clear()

    def _script(self, to: str | None, entry: _Scripted) -> None:
        with self._state.lock:
            self._state.scripts.setdefault(to, []).append(entry)

    # -- what was received ---------------------------------------------------------------

    @property
    def requests(self) -> list[TwilioRequest]:
        with self._state.lock:
            return list(self._state.requests)

    @property
    def messages(self) -> list[TwilioRequest]:
        return [r for r in self.requests if r.resource == "Messages"]

    @property
    def calls(self) -> list[TwilioRequest]:
        return [r for r in self.requests if r.resource == "Calls"]

    # -- used by the handler -------------------------------------------------------------

    def _record(self, request: TwilioRequest) -> None:
        with self._state.lock:
            self._state.requests.append(request)

    def _take_script(self, to: str | None) -> _Scripted | None:
        with self._state.lock:
            for key in (to, None):
                entries = self._state.scripts.get(key)
                while entries:
                    entry = entries[0]
                    if entry.times is None:
                        return entry
                    if entry.times > 0:
                        entry.times -= 1
                        if entry.times == 0:
                            entries.pop(0)
                        return entry
                    entries.pop(0)
            return None


def _error_body(status: int, code: int, message: str | None) -> dict[str, Any]:
    return {
        "code": code,
        "message": message or ERROR_MESSAGES.get(code, "Error"),
        "more_info": f"https://www.twilio.com/docs/errors/{code}",
        "status": status,
    }


class _Handler(BaseHTTPRequestHandler):
    owner: FakeTwilio
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send_json(
        self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(raw)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(raw)

    def _auth(self) -> tuple[str, str] | None:
        header = self.headers.get("Authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, _, password = base64.b64decode(value).decode().partition(":")
        except ValueError:
            return None
        return user, password

    def do_GET(self) -> None:
        self._handle()

    def do_POST(self) -> None:
        self._handle()

    def _handle(self) -> None:
        owner = self.owner
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        form = parse_qs(raw.decode(), keep_blank_values=True)
        parts = self.path.split("?")[0].strip("/").split("/")
        account_sid: str | None = None
        resource = ""
        if len(parts) == 4 and parts[0] == API_VERSION and parts[1] == "Accounts":
            account_sid = parts[2]
            if self.command == "POST" and parts[3] in ("Messages.json", "Calls.json"):
                resource = parts[3].removesuffix(".json")
        auth = self._auth()
        request = TwilioRequest(
            method=self.command,
            path=self.path,
            resource=resource,
            account_sid=account_sid,
            auth=auth,
            form=form,
            headers={k: v for k, v in self.headers.items()},
        )
        owner._record(request)

        if auth != (owner.account_sid, owner.auth_token):
            self._send_json(
                401,
                _error_body(401, 20003, "Authenticate")
                | {"detail": "Your AccountSid or AuthToken was incorrect."},
                {"WWW-Authenticate": 'Basic realm="Twilio API"'},
            )
            return
        if not resource or account_sid != owner.account_sid:
            self._send_json(404, _error_body(404, 20404, None))
            return
        scripted = owner._take_script(request.field("To"))
        if scripted is not None:
            if scripted.hang:
                owner._state.release.wait(60)
                self.close_connection = True
                return
            if scripted.raw_body is not None:
                raw = scripted.raw_body.encode()
                self.send_response(scripted.status)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)
                return
            headers = {}
            if scripted.retry_after is not None:
                headers["Retry-After"] = f"{scripted.retry_after:g}"
            code = scripted.code if scripted.code is not None else 20000 + scripted.status
            self._send_json(
                scripted.status, _error_body(scripted.status, code, scripted.message), headers
            )
            return
        self._create(request)

    def _create(self, request: TwilioRequest) -> None:
        to, sender = request.field("To"), request.field("From")
        if not to:
            self._send_json(400, _error_body(400, 21604, None))
            return
        if not sender:
            self._send_json(400, _error_body(400, 21603, None))
            return
        now = formatdate(usegmt=True)
        account = self.owner.account_sid
        common: dict[str, Any] = {
            "account_sid": account,
            "api_version": API_VERSION,
            "date_created": now,
            "date_updated": now,
            "direction": "outbound-api",
            "from": sender,
            "to": to,
            "status": "queued",
            "price": None,
            "price_unit": "USD",
        }
        if request.resource == "Messages":
            media = request.form.get("MediaUrl", [])
            if not request.field("Body") and not media:
                self._send_json(400, _error_body(400, 21602, None))
                return
            sid = "SM" + secrets.token_hex(16)
            body = common | {
                "sid": sid,
                "body": request.field("Body") or "",
                "num_media": str(len(media)),
                "num_segments": "1",
                "date_sent": None,
                "error_code": None,
                "error_message": None,
                "messaging_service_sid": None,
                "uri": f"/{API_VERSION}/Accounts/{account}/Messages/{sid}.json",
                "subresource_uris": {
                    "media": f"/{API_VERSION}/Accounts/{account}/Messages/{sid}/Media.json"
                },
            }
        else:
            if not (request.field("Twiml") or request.field("Url")):
                self._send_json(400, _error_body(400, 21205, None))
                return
            sid = "CA" + secrets.token_hex(16)
            body = common | {
                "sid": sid,
                "parent_call_sid": None,
                "start_time": None,
                "end_time": None,
                "duration": None,
                "answered_by": None,
                "caller_name": None,
                "uri": f"/{API_VERSION}/Accounts/{account}/Calls/{sid}.json",
            }
        self._send_json(201, body)
