"""The operations table is botocore's model, the API answers by it, the README lists it."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import botocore
import httpx
import pytest

from api.operations import TABLE, Operation, readme_list
from tests.test_security import signed_headers
from worker.wire.operations import OPERATIONS

README = Path(__file__).resolve().parent.parent / "README.md"


def _model_operations() -> list[tuple[str, str, str]]:
    path = Path(botocore.__file__).parent / "data/pinpoint/2016-12-01/service-2.json.gz"
    model = json.loads(gzip.decompress(path.read_bytes()))
    return sorted((name, op["http"]["method"], op["http"]["requestUri"])
                  for name, op in model["operations"].items())


def test_the_table_is_the_installed_models_operations() -> None:
    # On failure: .venv/bin/python scripts/pinpoint_operations.py && python -m api.operations
    assert list(OPERATIONS) == _model_operations()


def test_the_readme_lists_every_operation_with_its_status() -> None:
    text = README.read_text()
    assert readme_list() in text, "run: .venv/bin/python -m api.operations"
    listed = re.findall(r"^\| `(\w+)` \| `[A-Z]+ [^`]+` \| (implemented|not implemented) \|$",
                        text, flags=re.MULTILINE)
    assert listed == [(o.name, "implemented" if o.implemented else "not implemented")
                      for o in TABLE]
    assert {name for name, _ in listed} == {name for name, _, _ in _model_operations()}


def test_the_status_follows_the_routes() -> None:
    status = {o.name: o.implemented for o in TABLE}
    for name in ("SendUsersMessages", "SendMessages", "GetEndpoint", "UpdateEndpointsBatch",
                 "GetApplicationSettings", "UpdateApplicationSettings", "TagResource",
                 "UntagResource", "ListTagsForResource", "UpdateApnsVoipSandboxChannel"):
        assert status[name], name
    for name in ("CreateCampaign", "GetSegments", "CreateJourney", "CreateExportJob"):
        assert not status[name], name


@pytest.mark.parametrize("operation", [o for o in TABLE if not o.implemented],
                         ids=lambda o: o.name)
def test_each_unimplemented_operation_answers_404_naming_itself(
    api_url: str, operation: Operation
) -> None:
    path = re.sub(r"\{[^}]+\}", "x", operation.uri)
    method = operation.method
    body = b"{}" if method in ("POST", "PUT") else b""
    response = httpx.request(method, api_url + path, content=body,
                             headers=signed_headers(api_url, method, path, body))
    assert response.status_code == 404
    assert response.headers["X-Amzn-ErrorType"] == "NotFoundException"
    assert response.json()["Message"] == f"Herald does not implement {operation.name}"
