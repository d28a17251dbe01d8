"""Bad-input campaign: hypothesis generates and mutates input for every route of the live API.

Every request is SigV4-signed with botocore (as any SDK would sign it) and sent raw with httpx,
so the server sees input boto3 would refuse to build: members of the wrong type, missing
members, huge strings, deep nesting, NaN and 1e400, NUL and lone surrogates, control
characters, invalid base64 in ``RawEmail.Data``, percent-encoded oddities in path parameters,
odd query strings, template-shaped strings (``{{`` and ``}}`` unbalanced and nested, long
whitespace inside ``{{ }}``) and, in sends, huge substitutions (many keys, huge values,
bodies that would render far past the per-message limit). For every answer:

- no 5xx, and no stack trace in any body;
- no worker process dies (the poison pill of issue 14 used to kill them);
- every error is Pinpoint-shaped: ``X-Amzn-ErrorType`` among Pinpoint's names, a
  ``{"Message", "RequestID"}`` body whose id matches ``x-amzn-RequestId``;
- a correctly signed request is never refused as badly signed (403);
- a rejected request writes nothing: row counts of applications, endpoints, channels,
  message_requests, deliveries and access_keys, and the content of the campaign app's
  endpoints and channels, are the same before and after every 4xx.

The number of cases and their outcomes are printed at the end of the run (``tests/report.py``)
and kept in ``test-artifacts/campaign.txt``. Targeted cases live beside the behaviour they
guard: CRLF in substitutions that end in e-mail headers
(``test_send_users.py::test_substitution_cannot_inject_an_email_header``), 101 users
(``test_send_users.py::test_users_must_number_1_to_100``), the 16th endpoint of a user
(``test_management.py::test_sixteenth_endpoint_of_a_user_is_refused``); signatures in
``test_security.py``.
"""

from __future__ import annotations

import base64
import copy
import json
import random
import string
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.keys import p8_key, service_account_json
from tests.report import figure
from tests.stack import ARTIFACTS, ROOT_KEY_ID, ROOT_SECRET, Stack

ERROR_TYPES = {
    "BadRequestException", "ForbiddenException", "NotFoundException",
    "MethodNotAllowedException", "PayloadTooLargeException", "TooManyRequestsException",
    "InternalServerErrorException",
}
CHANNEL_KINDS = ("apns", "apns_sandbox", "apns_voip", "apns_voip_sandbox", "gcm", "baidu",
                 "adm", "email", "sms", "voice")
# Examples per route; the whole file runs in about a minute and three quarters.
BODY_EXAMPLES = 300
CHANNEL_EXAMPLES = 500
PATH_EXAMPLES = 700
# The statuses the API documents; anything else (a 3xx redirect, a 5xx) is a finding.
STATUSES = {200, 201, 202, 400, 404, 405, 413, 429}
# Derandomized: CI runs the same generated cases every time, so a failure is reproducible
# and a green run is not luck. Change the examples by changing the strategies.
CAMPAIGN = settings(
    max_examples=BODY_EXAMPLES, deadline=None, database=None, derandomize=True,
    suppress_health_check=list(HealthCheck),
)

# --- generated values ------------------------------------------------------------------------

NASTY_STRINGS = [
    "", " ", "\x00", "a\x00b", "\ud800", "x\udfffy", "\r\nBcc: evil@x.test", "a\rb\nc",
    "\u202eevil", "\ufeff", "\x7f\x1b[31m", "²", "١٢", "💥" * 8, "{{Name}}", "{{", "}}",
    "${jndi:ldap://x}", "'; drop table endpoints; --", "<script>alert(1)</script>",
    "%00", "%s%n", "NaN", "-0", "1e400", "true", "null", "A" * 257, "B" * 4097,
    "not base64!", "====", "AAA", "+15555550100", "user@example.com",
]
# What the renderer scans: braces unbalanced and nested, and whitespace runs that made the
# former variable regex backtrack cubically (issue 14).
TEMPLATE_STRINGS = [
    "{{", "}}", "{{{{a}}}}", "{{{Name}}}", "{{ {{Name}} }}", "{{Name}", "{Name}}", "}}{{",
    "{{}}", "{{ }}", "{{\t\n}}", "{{" + " " * 20_000, "{{" + " " * 20_000 + "}",
    "{{ " + "\t" * 5_000 + "Name" + " " * 5_000 + " }}", "{{ " * 5_000, "{" * 10_000 + "}}",
    "{{User.UserAttributes.Name}}" * 1_000, "{{Name}}" * 20_000,
]
# Tokens the JSON encoder cannot produce, spliced into the text after encoding.
RAW_TOKENS = {"__BIG_FLOAT__": "1e400", "__MINUS_BIG__": "-1e400", "__HUGE_INT__": "9" * 5000}


def _huge(n: int) -> str:
    return "H" * n


template_strings = st.one_of(
    st.sampled_from(TEMPLATE_STRINGS),
    st.lists(st.sampled_from(["{{", "}}", "{", "}", " ", "\t", "\n", "Name", "a b", "{{Name}}"]),
             min_size=1, max_size=30).map("".join),
)


strings = st.one_of(
    st.text(max_size=24),
    st.sampled_from(NASTY_STRINGS),
    st.text(alphabet=st.characters(max_codepoint=0x1F), min_size=1, max_size=8),
    st.sampled_from([1000, 70_000, 600_000]).map(_huge),
    template_strings,
    # Long and incompressible: what an index entry or a header cannot hold.
    st.binary(min_size=200, max_size=3000).map(lambda b: base64.b64encode(b).decode()),
)
# Path segments stay under httpx's 64 KiB URL limit (the server's own limit is what we test).
segment_strings = st.one_of(
    st.text(max_size=24), st.sampled_from(NASTY_STRINGS),
    st.sampled_from([1000, 9000, 20_000]).map(_huge),
)
scalars = st.one_of(
    st.none(), st.booleans(), st.sampled_from(list(RAW_TOKENS)),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), strings,
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(strings, children, max_size=4)
    ),
    max_leaves=8,
)


def encode(document: Any) -> bytes:
    raw = json.dumps(document, allow_nan=True)
    for marker, token in RAW_TOKENS.items():
        raw = raw.replace(f'"{marker}"', token)
    return raw.encode("utf-8", "surrogatepass")


def _nest(value: Any, depth: int, as_list: bool) -> Any:
    for _ in range(depth):
        value = [value] if as_list else {"n": value}
    return value


def _paths(document: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(document, dict):
        for key, value in document.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(document, list):
        for index, value in enumerate(document):
            yield from _paths(value, (*prefix, index))


def _parent(document: Any, path: tuple[Any, ...]) -> Any:
    for step in path[:-1]:
        document = document[step]
    return document


def mutated(data: st.DataObject, base: Any) -> Any:
    """The base document with one to three mutations at drawn places."""
    document = copy.deepcopy(base)
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        path = data.draw(st.sampled_from(list(_paths(document))), label="at")
        operation = data.draw(
            st.sampled_from(["replace", "delete", "add", "nasty", "nest"]), label="op")
        if operation == "replace":
            value: Any = data.draw(json_values, label="value")
        elif operation == "nasty":
            value = data.draw(st.sampled_from(NASTY_STRINGS + TEMPLATE_STRINGS), label="string")
        elif operation == "nest":
            value = _nest(data.draw(scalars), data.draw(st.integers(20, 40)),
                          data.draw(st.booleans()))
        elif operation == "add":
            target = document
            for step in path:
                target = target[step]
            if isinstance(target, dict):
                target[data.draw(strings, label="key")] = data.draw(json_values)
            elif isinstance(target, list):
                target.append(data.draw(json_values))
            continue
        else:  # delete
            if path:
                del _parent(document, path)[path[-1]]
            continue
        if path:
            _parent(document, path)[path[-1]] = value
        else:
            document = value
    return document


RAW_BODIES = [
    b"", b" ", b"{", b"[]", b"null", b"42", b'"s"', b"{}", b'{"a":}', b"\xff\xfe\x00",
    b'{"a": NaN}', b'{"a": Infinity}', b"[" * 100_000, b'{"a":' * 50_000,
    b'{"\\u0000": 1}', b'{"a": "\\ud800"}', b"\xef\xbb\xbf{}", b'{"a": 1, "a": 2}',
]


def body_of(data: st.DataObject, base: Any) -> bytes:
    kind = data.draw(st.integers(0, 9), label="body kind")
    if kind == 0:
        return data.draw(st.sampled_from(RAW_BODIES), label="raw")
    if kind == 1:
        return encode(data.draw(json_values, label="random document"))
    return encode(mutated(data, base))


def odd_segment(data: st.DataObject) -> str:
    """A path parameter as a client would put it on the wire: percent-encoded."""
    choice = data.draw(st.integers(0, 3), label="odd segment")
    if choice == 0:
        return data.draw(st.sampled_from(
            ["%00", "%FF%FE", "%C0%AF", "%2e%2e", "%2F", "%25", "a%20b", "%E2%80%AE",
             "%F0%9F%92%A5", "x" * 300, "%5Cu0000", "%0D%0A"]), label="raw segment")
    value = data.draw(segment_strings if choice == 1 else st.text(min_size=1, max_size=40),
                      label="s")
    value = value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    # Dots are encoded so that no client-side dot-segment normalisation changes the path.
    return quote(value, safe="").replace(".", "%2E") or "%20"


def segment(data: st.DataObject, good: str) -> str:
    return good if data.draw(st.integers(0, 9), label="good param") < 7 else odd_segment(data)


# --- the live API ------------------------------------------------------------------------

SNAPSHOT = text("""
    select (select count(*) from applications) as applications,
           (select count(*) from endpoints) as endpoints,
           (select count(*) from channels) as channels,
           (select count(*) from message_requests) as message_requests,
           (select count(*) from deliveries) as deliveries,
           (select count(*) from access_keys) as access_keys,
           (select md5(coalesce(string_agg(e::text, ',' order by e.id), ''))
              from endpoints e where e.app_id = :app) as app_endpoints,
           (select md5(coalesce(string_agg(c::text, ',' order by c.channel_type), ''))
              from channels c where c.app_id = :app) as app_channels
""")


def _snapshot(db: Engine, app_id: str) -> dict[str, Any]:
    with db.connect() as conn:
        return dict(conn.execute(SNAPSHOT, {"app": app_id}).mappings().one())


@dataclass
class Campaign:
    api_url: str
    db: Engine
    app_id: str
    users_request_id: str
    messages_request_id: str
    channel_bodies: dict[str, dict[str, Any]]
    workers: list[subprocess.Popen[bytes]]
    http: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=60))
    outcomes: Counter[tuple[str, int]] = field(default_factory=Counter)

    def snapshot(self) -> dict[str, Any]:
        return _snapshot(self.db, self.app_id)

    def call(self, route: str, method: str, path: str, body: bytes = b"") -> httpx.Response:
        """Send one signed request and check the invariants of every answer."""
        url = self.api_url + path
        request = AWSRequest(method=method, url=url, data=body,
                             headers={"Content-Type": "application/json"})
        SigV4Auth(Credentials(ROOT_KEY_ID, ROOT_SECRET), "mobiletargeting",
                  "us-east-1").add_auth(request)
        before = self.snapshot()
        response = self.http.request(method, url, content=body, headers=dict(request.headers))
        self.outcomes[(route, response.status_code)] += 1
        where = (f"{method} {path[:200]} {body[:300]!r} -> {response.status_code} "
                 f"{response.text[:300]}")
        assert response.status_code < 500, where
        assert "Traceback" not in response.text and 'File "' not in response.text, where
        assert response.status_code != 403, f"a correctly signed request was refused: {where}"
        assert response.status_code in STATUSES, where
        if response.status_code >= 400:
            assert response.headers.get("X-Amzn-ErrorType") in ERROR_TYPES, where
            answer = response.json()
            assert set(answer) == {"Message", "RequestID"}, where
            assert answer["RequestID"] == response.headers["x-amzn-RequestId"], where
            assert self.snapshot() == before, f"a rejected request wrote: {where}"
        assert all(worker.poll() is None for worker in self.workers), f"a worker died: {where}"
        return response


@pytest.fixture(scope="module")
def campaign(stack: Stack, api_url: str, client: Any, db: Engine) -> Iterator[Campaign]:
    app_id = client.create_app(CreateApplicationRequest={"Name": "campaign"})[
        "ApplicationResponse"]["Id"]
    apns = {"TokenKey": p8_key(), "TokenKeyId": "ABC123DEFG", "TeamId": "TEAM123456",
            "BundleId": "com.example.app", "DefaultAuthenticationMethod": "TOKEN",
            "Enabled": True}
    channel_bodies: dict[str, dict[str, Any]] = {
        "apns": apns, "apns_sandbox": apns, "apns_voip": apns, "apns_voip_sandbox": apns,
        "gcm": {"ServiceJson": service_account_json("http://127.0.0.1:1/token"),
                "DefaultAuthenticationMethod": "TOKEN", "Enabled": True},
        "baidu": {"ApiKey": "baidu-key", "SecretKey": "baidu-secret", "Enabled": False},
        "adm": {"ClientId": "amzn1.client", "ClientSecret": "adm-secret", "Enabled": False},
        "email": {"FromAddress": "campaign@herald.test", "Identity": "herald.test",
                  "Enabled": True},
        "sms": {"SenderId": "HERALD", "Enabled": False},
        "voice": {"Enabled": False},
    }
    client.update_email_channel(ApplicationId=app_id,
                                EmailChannelRequest=channel_bodies["email"])
    before = _snapshot(db, app_id)
    client.update_endpoints_batch(ApplicationId=app_id, EndpointBatchRequest={"Item": [
        {"Id": "e1", "ChannelType": "EMAIL", "Address": "u1@herald.test",
         "User": {"UserId": "u1", "UserAttributes": {"Name": ["Una"]}}},
    ]})
    client.update_endpoint(ApplicationId=app_id, EndpointId="e1",
                           EndpointRequest={"Attributes": {"a": ["b"]}})
    assert _snapshot(db, app_id) != before  # the write detector sees writes
    updated = _snapshot(db, app_id)
    client.update_endpoint(ApplicationId=app_id, EndpointId="e1",
                           EndpointRequest={"Attributes": {"a": ["c"]}})
    assert _snapshot(db, app_id)["app_endpoints"] != updated["app_endpoints"]  # and updates
    message = {"DefaultMessage": {"Body": "hello"}}
    users_request = client.send_users_messages(ApplicationId=app_id, SendUsersMessageRequest={
        "MessageConfiguration": message, "Users": {"u1": {}}})["SendUsersMessageResponse"]
    messages_request = client.send_messages(ApplicationId=app_id, MessageRequest={
        "MessageConfiguration": message, "Endpoints": {"e1": {}}})["MessageResponse"]
    run = Campaign(api_url, db, app_id, users_request["RequestId"],
                   messages_request["RequestId"], channel_bodies, stack.workers)
    yield run
    run.http.close()
    _report(run.outcomes)


def _report(outcomes: Counter[tuple[str, int]]) -> None:
    total = sum(outcomes.values())
    by_status = Counter[int]()
    for (_, status), count in outcomes.items():
        by_status[status] += count
    statuses = ", ".join(f"{status}: {count}" for status, count in sorted(by_status.items()))
    figure("campaign", f"{total} generated requests; by status {statuses}")
    lines = [f"{total} generated requests", f"by status: {statuses}", "by route:"]
    routes = sorted({route for route, _ in outcomes})
    for route in routes:
        counts = {s: c for (r, s), c in outcomes.items() if r == route}
        detail = ", ".join(f"{s}: {c}" for s, c in sorted(counts.items()))
        lines.append(f"  {route}: {sum(counts.values())} ({detail})")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "campaign.txt").write_text("\n".join(lines) + "\n")
    print("\n" + "\n".join(lines))


# --- bodies --------------------------------------------------------------------------------

ENDPOINT = {
    "ChannelType": "EMAIL", "Address": "fuzz@herald.test",
    "Attributes": {"interests": ["a", "b"]}, "Metrics": {"visits": 1.5},
    "Demographic": {"Platform": "ios", "Locale": "en_US"},
    "Location": {"City": "Lyon", "Latitude": 45.7, "Longitude": 4.8},
    "User": {"UserId": "fuzz-batch", "UserAttributes": {"Name": ["Fuzz"]}},
    "OptOut": "NONE", "EndpointStatus": "ACTIVE", "EffectiveDate": "2026-01-01T00:00:00Z",
    "RequestId": "r-1",
}
MESSAGE_CONFIGURATION = {
    "DefaultMessage": {"Body": "hi {{Name}}", "Substitutions": {"Name": ["x"]}},
    "DefaultPushNotificationMessage": {"Title": "t", "Body": "b", "Action": "OPEN_APP",
                                       "Data": {"k": "v"}, "SilentPush": False},
    "APNSMessage": {"Badge": 1, "Priority": "10", "TimeToLive": 60, "CollapseId": "c"},
    "GCMMessage": {"Priority": "high", "TimeToLive": 60, "Data": {"k": "v"}},
    "EmailMessage": {"SimpleEmail": {
        "Subject": {"Data": "Hi {{User.UserAttributes.Name}}", "Charset": "UTF-8"},
        "TextPart": {"Data": "text {{Name}}"}, "HtmlPart": {"Data": "<p>{{Name}}</p>"},
        "Headers": [{"Name": "X-Campaign", "Value": "1"}]},
        "ReplyToAddresses": ["reply@herald.test"]},
    "SMSMessage": {"Body": "sms", "MessageType": "TRANSACTIONAL"},
    "VoiceMessage": {"Body": "voice", "LanguageCode": "en-US"},
}
RAW_EMAIL_CONFIGURATION = {"EmailMessage": {"RawEmail": {"Data": base64.b64encode(
    b"Subject: raw\r\nFrom: campaign@herald.test\r\n\r\nbody\r\n").decode()}}}
USERS_MESSAGE = {
    "MessageConfiguration": MESSAGE_CONFIGURATION,
    "Users": {"u1": {"Substitutions": {"Name": ["y"]}, "TitleOverride": "T",
                     "Context": {"k": "v"}},
              "nobody": {"BodyOverride": "B", "RawContent": "{}"}},
    "Context": {"campaign": "fuzz"}, "TraceId": "trace",
}
MESSAGES_REQUEST = {
    "MessageConfiguration": MESSAGE_CONFIGURATION,
    "Addresses": {"direct@herald.test": {"ChannelType": "EMAIL", "BodyOverride": "B"}},
    "Endpoints": {"e1": {"Substitutions": {"Name": ["z"]}}, "ghost": {}},
    "Context": {"campaign": "fuzz"}, "TraceId": "trace",
}
INVALID_BASE64 = ["not base64!", "====", "AAA", "A", "\x00", "\ud800", "ä", "YQ==YQ==",
                  "a" * 4097 + "!", " ", "-_-_"]


@CAMPAIGN
@given(data=st.data())
def test_create_app(campaign: Campaign, data: st.DataObject) -> None:
    body = body_of(data, {"Name": "fuzz", "tags": {"team": "growth"}})
    campaign.call("CreateApp", "POST", "/v1/apps", body)


@CAMPAIGN
@given(data=st.data())
def test_update_endpoint(campaign: Campaign, data: st.DataObject) -> None:
    number = data.draw(st.integers(0, 20))
    endpoint_id = segment(data, f"fz-{number}")
    app = segment(data, campaign.app_id)
    # A user per endpoint: one user's 15-endpoint quota would soon refuse every new id.
    base = {**ENDPOINT, "User": {**ENDPOINT["User"], "UserId": f"fuzz-user-{number}"}}
    campaign.call("UpdateEndpoint", "PUT", f"/v1/apps/{app}/endpoints/{endpoint_id}",
                  body_of(data, base))


@CAMPAIGN
@given(data=st.data())
def test_update_endpoints_batch(campaign: Campaign, data: st.DataObject) -> None:
    items = [{**ENDPOINT, "Id": "fz-b1"}, {**ENDPOINT, "Id": "fz-b2", "ChannelType": "SMS",
                                            "Address": "+15555550100"}]
    campaign.call("UpdateEndpointsBatch", "PUT",
                  f"/v1/apps/{segment(data, campaign.app_id)}/endpoints",
                  body_of(data, {"Item": items}))


@settings(CAMPAIGN, max_examples=CHANNEL_EXAMPLES)
@given(data=st.data())
def test_update_channel(campaign: Campaign, data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(CHANNEL_KINDS), label="kind")
    path = f"/v1/apps/{segment(data, campaign.app_id)}/channels/{segment(data, kind)}"
    campaign.call(f"Update{kind}Channel", "PUT", path,
                  body_of(data, campaign.channel_bodies[kind]))


def _raw_email_variant(data: st.DataObject, request: dict[str, Any]) -> dict[str, Any]:
    if data.draw(st.booleans(), label="raw email"):
        request = {**request, "MessageConfiguration": RAW_EMAIL_CONFIGURATION}
        if data.draw(st.booleans(), label="invalid base64"):
            bad = data.draw(st.sampled_from(INVALID_BASE64), label="base64")
            request["MessageConfiguration"] = {"EmailMessage": {"RawEmail": {"Data": bad}}}
    return request


def _substitutions(data: st.DataObject) -> dict[str, list[str]]:
    """Many keys or huge values: on both sides of the intake limits (10,000 keys, 2 MiB)."""
    shape = data.draw(st.sampled_from(["keys", "value", "values", "template keys"]),
                      label="substitutions")
    if shape == "keys":
        count = data.draw(st.sampled_from([300, 9_999, 10_001, 30_000]), label="keys")
        return {f"K{i}": [str(i)] for i in range(count)}
    if shape == "value":
        size = data.draw(st.sampled_from([100_000, 1_000_000, 2_100_000]), label="value size")
        return {"Name": ["v" * size]}
    if shape == "values":  # only the first value is used; every one counts at intake
        return {"Name": ["v"] + ["w" * 300_000] * data.draw(st.integers(1, 8), label="extra")}
    return {data.draw(template_strings, label="key"): [data.draw(template_strings)]
            for _ in range(data.draw(st.integers(1, 5)))}


# Bodies for huge substitutions: over the per-message count of variables, and a few
# references to a value that may be a megabyte (over the per-message size once rendered).
RENDERING_BODIES = ["{{Name}}" * 50_000, "{{ Name }}" * 20, "<p>{{Name}}</p>" * 3]


def _rendering_variant(data: st.DataObject, request: dict[str, Any]) -> dict[str, Any]:
    """Template-shaped bodies and huge substitutions, at the message or at a recipient."""
    request = copy.deepcopy(request)
    configuration = request["MessageConfiguration"]
    body = data.draw(st.one_of(template_strings, st.sampled_from(RENDERING_BODIES)),
                     label="body")
    configuration["DefaultMessage"] = {"Body": body}
    configuration["EmailMessage"] = {"SimpleEmail": {
        "Subject": {"Data": data.draw(template_strings, label="subject")},
        "TextPart": {"Data": body}, "HtmlPart": {"Data": body}}}
    where = data.draw(st.sampled_from(["message", "recipient", "both"]), label="where")
    if where in ("message", "both"):
        configuration["DefaultMessage"]["Substitutions"] = _substitutions(data)
    if where in ("recipient", "both"):
        recipients = request.get("Users") or request.get("Endpoints") or {}
        for name in list(recipients)[:1]:
            recipients[name] = {**recipients[name], "Substitutions": _substitutions(data)}
    return request


def send_body(data: st.DataObject, request: dict[str, Any]) -> bytes:
    """A third of the sends render template-shaped text with huge substitutions, half of
    those exactly as generated so that they reach the worker's renderer."""
    if data.draw(st.integers(0, 2), label="rendering variant") != 0:
        return body_of(data, request)
    request = _rendering_variant(data, request)
    if data.draw(st.booleans(), label="mutated"):
        return encode(mutated(data, request))
    return encode(request)


@CAMPAIGN
@given(data=st.data())
def test_send_users_messages(campaign: Campaign, data: st.DataObject) -> None:
    request = _raw_email_variant(data, USERS_MESSAGE)
    campaign.call("SendUsersMessages", "POST",
                  f"/v1/apps/{segment(data, campaign.app_id)}/users-messages",
                  send_body(data, request))


@CAMPAIGN
@given(data=st.data())
def test_send_messages(campaign: Campaign, data: st.DataObject) -> None:
    request = _raw_email_variant(data, MESSAGES_REQUEST)
    campaign.call("SendMessages", "POST", f"/v1/apps/{segment(data, campaign.app_id)}/messages",
                  send_body(data, request))


# --- paths and query strings ---------------------------------------------------------------

PathRoute = tuple[str, str, Callable[[Campaign, st.DataObject], str]]


def _query(data: st.DataObject) -> str:
    pairs = []
    for name in ("page-size", "token", data.draw(segment_strings, label="extra name")):
        if data.draw(st.booleans(), label=f"has {name}"):
            value = data.draw(st.one_of(
                segment_strings, st.integers(-5, 2000).map(str),
                st.binary(max_size=40).map(lambda b: base64.urlsafe_b64encode(b).decode()),
            ), label=name)
            pairs.append((name, value))
    encoded = "&".join(
        f"{quote(k.encode('utf-8', 'surrogatepass'), safe='-_.~')}="
        f"{quote(v.encode('utf-8', 'surrogatepass'), safe='-_.~')}"
        for k, v in pairs
    )
    return f"?{encoded}" if encoded else ""


def _app(c: Campaign, d: st.DataObject) -> str:
    return f"/v1/apps/{segment(d, c.app_id)}"


PATH_ROUTES: list[PathRoute] = [
    ("GetApps", "GET", lambda c, d: "/v1/apps" + _query(d)),
    ("GetApp", "GET", _app),
    # DeleteApp only on odd ids: deleting the campaign app would end the campaign.
    ("DeleteApp", "DELETE", lambda c, d: f"/v1/apps/{odd_segment(d)}"),
    ("GetEndpoint", "GET", lambda c, d: f"{_app(c, d)}/endpoints/{segment(d, 'e1')}"),
    ("DeleteEndpoint", "DELETE", lambda c, d: f"{_app(c, d)}/endpoints/{segment(d, 'fz-1')}"),
    ("GetUserEndpoints", "GET", lambda c, d: f"{_app(c, d)}/users/{segment(d, 'u1')}"),
    ("DeleteUserEndpoints", "DELETE",
     lambda c, d: f"{_app(c, d)}/users/{segment(d, 'fuzz-batch')}"),
    ("GetChannels", "GET", lambda c, d: f"{_app(c, d)}/channels"),
    ("GetChannel", "GET", lambda c, d:
     f"{_app(c, d)}/channels/{segment(d, d.draw(st.sampled_from(CHANNEL_KINDS)))}"),
    ("DeleteChannel", "DELETE", lambda c, d:
     f"{_app(c, d)}/channels/{segment(d, d.draw(st.sampled_from(CHANNEL_KINDS)))}"),
    ("GetUsersMessages", "GET",
     lambda c, d: f"{_app(c, d)}/users-messages/{segment(d, c.users_request_id)}"),
    ("GetMessages", "GET",
     lambda c, d: f"{_app(c, d)}/messages/{segment(d, c.messages_request_id)}"),
]


@settings(CAMPAIGN, max_examples=PATH_EXAMPLES)
@given(data=st.data())
def test_paths_and_queries(campaign: Campaign, data: st.DataObject) -> None:
    name, method, build = data.draw(st.sampled_from(PATH_ROUTES), label="route")
    path = build(campaign, data)
    if data.draw(st.integers(0, 19), label="wrong method") == 0:
        method = data.draw(st.sampled_from(["PATCH", "POST", "PUT", "DELETE", "GET"]))
    campaign.call(name, method, path, data.draw(st.sampled_from([b"", b"{}", b"\x00"])))


# --- found by the campaign, kept as plain regression cases -------------------------------


def _found_cases(app: str) -> list[tuple[str, str, bytes]]:
    users = {"MessageConfiguration": {"DefaultMessage": {"Body": "x"}}, "Users": {"u": {}}}
    return [
        ("PUT", f"/v1/apps/{app}/endpoints/nan", b'{"ChannelType":"EMAIL","Metrics":{"m":NaN}}'),
        ("PUT", f"/v1/apps/{app}/endpoints/inf",
         b'{"ChannelType":"EMAIL","Location":{"Latitude":1e400}}'),
        ("PUT", f"/v1/apps/{app}/endpoints/nul",
         b'{"ChannelType":"EMAIL","Address":"a\\u0000b@x.test"}'),
        ("PUT", f"/v1/apps/{app}/endpoints/surrogate",
         b'{"ChannelType":"EMAIL","Address":"a\\ud800b@x.test"}'),
        ("PUT", f"/v1/apps/{app}/channels/sms", b'{"SenderId":"a\\u0000"}'),
        ("POST", f"/v1/apps/{app}/users-messages",
         json.dumps({**users, "Users": {"u" * 300: {}}}).encode()),
        ("POST", f"/v1/apps/{app}/users-messages",
         json.dumps({**users, "TraceId": "t" * 300}).encode()),
        ("POST", f"/v1/apps/{app}/users-messages", encode({**users, "Unknown": "__BIG_FLOAT__"})),
        ("POST", f"/v1/apps/{app}/users-messages", b'{"MessageConfiguration":{},'
                                                   b'"Users":{"u\\u0000":{}}}'),
        ("POST", f"/v1/apps/{app}/messages", json.dumps({
            "MessageConfiguration": {"DefaultMessage": {"Body": "x"}},
            "Endpoints": {"e" * 200: {}}}).encode()),
        ("POST", f"/v1/apps/{app}/messages", json.dumps({  # index row over 2704 bytes
            "MessageConfiguration": {"DefaultPushNotificationMessage": {"Body": "x"}},
            "Addresses": {"".join(random.choices(string.ascii_letters, k=4000)): {
                "ChannelType": "GCM"}}}).encode()),
        ("GET", "/v1/apps?page-size=%C2%B2", b""),
        ("GET", "/v1/apps?page-size=" + "1" * 5000, b""),
        ("GET", "/v1/apps?page-size=%ED%A0%80", b""),  # not UTF-8: was refused as unsigned
        ("GET", "/v1/apps?token=AA%3D%3D", b""),
        ("GET", f"/v1/apps/{app}/endpoints/a%00b", b""),
        ("GET", f"/v1/apps/{app}/users/a%00b", b""),
        ("GET", f"/v1/apps/{app}/users-messages/a%00b", b""),
        ("DELETE", "/v1/apps/a%00b", b""),
        ("GET", f"/v1/apps/{app}/channels/", b""),  # was a 307 to a URL built from Host
    ]


def test_found_cases_are_rejected_cleanly(campaign: Campaign) -> None:
    for method, path, body in _found_cases(campaign.app_id):
        response = campaign.call("regression", method, path, body)
        assert 400 <= response.status_code < 500, (method, path, response.text)
