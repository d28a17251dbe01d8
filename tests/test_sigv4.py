"""The SigV4 verifier against signatures botocore itself produces."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from api.sigv4 import SignatureError, canonical_query, verify

KEY, SECRET = "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


def signed(method: str = "POST", url: str = "http://127.0.0.1:8080/v1/apps/abc/users-messages",
           body: bytes = b'{"a": 1}', region: str = "us-east-1",
           service: str = "mobiletargeting", secret: str = SECRET) -> AWSRequest:
    request = AWSRequest(method=method, url=url, data=body,
                         headers={"Content-Type": "application/json"})
    SigV4Auth(Credentials(KEY, secret), service, region).add_auth(request)
    return request


def check(request: AWSRequest, *, body: bytes | None = None, now: datetime | None = None,
          region: str | None = "us-east-1", **overrides: Any) -> None:
    from urllib.parse import urlsplit

    parts = urlsplit(request.url)
    headers: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        headers.setdefault(name.lower(), []).append(value)
    headers.setdefault("host", [parts.netloc])
    verify(
        method=overrides.get("method", request.method),
        raw_path=overrides.get("path", parts.path),
        raw_query=overrides.get("query", parts.query),
        headers=headers,
        body=(request.body or b"") if body is None else body,
        secret_for=lambda key: SECRET if key == KEY else None,
        region=region,
        now=now,
    )


def test_accepts_what_botocore_signs() -> None:
    check(signed())
    check(signed("GET", "http://127.0.0.1:8080/v1/apps?page-size=2&token=a%2Fb%3D", b""))
    check(signed("PUT", "http://localhost:9/v1/apps/x/endpoints/id%20with%20space", b"{}"))


def test_any_region_when_not_pinned() -> None:
    check(signed(region="eu-west-1"), region=None)


@pytest.mark.parametrize(
    ("mutation", "message"),
    [
        ({"body": b'{"a": 2}'}, "does not match"),
        ({"method": "PUT"}, "does not match"),
        ({"path": "/v1/apps/other/users-messages"}, "does not match"),
        ({"query": "x=1"}, "does not match"),
        ({"skew": timedelta(minutes=16)}, "expired"),
        ({"skew": timedelta(minutes=-16)}, "expired"),
    ],
)
def test_rejects_tampering_and_stale_dates(mutation: dict[str, Any], message: str) -> None:
    if "skew" in mutation:  # the clock is read now, not when the parameters were collected
        mutation = {"now": datetime.now(UTC) + mutation["skew"]}
    with pytest.raises(SignatureError, match=message):
        check(signed(), **mutation)


def test_rejects_wrong_scope_and_secret() -> None:
    with pytest.raises(SignatureError, match="region"):
        check(signed(region="eu-west-1"))
    with pytest.raises(SignatureError, match="service"):
        check(signed(service="s3"))
    with pytest.raises(SignatureError, match="does not match"):
        check(signed(secret="wrong"))


def test_rejects_missing_or_malformed_authorization() -> None:
    request = signed()
    del request.headers["Authorization"]
    with pytest.raises(SignatureError, match="Missing"):
        check(request)
    request = signed()
    request.headers.replace_header("Authorization", "Bearer abc")
    with pytest.raises(SignatureError, match="not a valid"):
        check(request)


def test_unknown_key_is_rejected_without_leaking_the_expected_signature() -> None:
    request = signed()
    with pytest.raises(SignatureError) as excinfo:
        verify(method="POST", raw_path="/v1/apps/abc/users-messages", raw_query="",
               headers={k.lower(): [v] for k, v in request.headers.items()} | {
                   "host": ["127.0.0.1:8080"]},
               body=request.body, secret_for=lambda key: None, region="us-east-1")
    assert "invalid" in str(excinfo.value)


def test_canonical_query_sorts_and_encodes() -> None:
    assert canonical_query("b=2&a=1&a=0") == "a=0&a=1&b=2"
    assert canonical_query("token=a%2Fb%3D&x=") == "token=a%2Fb%3D&x="
