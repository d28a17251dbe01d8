"""One log stream: every line ``herald api``, ``herald worker`` and ``herald serve`` write is
one JSON object with level, logger and timestamp — Herald's events and the libraries' (Celery,
kombu, uvicorn, aioapns, alembic) alike.

One exception, named here rather than tolerated in general: Celery writes its shutdown notice
(``worker: Warm shutdown (MainProcess)``) with a bare ``os.write`` to stdout from inside its
signal handler, where ``logging`` cannot be used (it takes locks), and has no option to turn
it off. Celery's startup banner, also text on stdout, is turned off: ``herald worker`` passes
``--quiet`` when stdout is not a terminal, and the same facts are in its ``ready`` line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import provider_env
from tests.fakes.smtp import FakeSmtp
from tests.stack import ARTIFACTS, ROOT, SECRET_KEY, VENV_BIN, Stack, free_port, pinpoint

CELERY_SIGNAL_NOTICE = re.compile(r"worker: (Warm|Cold) shutdown \(MainProcess\)")


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every non-empty line of a log as JSON; fails on the first line that is not."""
    events = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or CELERY_SIGNAL_NOTICE.fullmatch(line):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            raise AssertionError(f"{path.name}:{number} is not JSON: {line[:200]!r}") from None
        assert isinstance(event, dict), (path.name, number, line)
        assert {"event", "level", "logger", "timestamp"} <= event.keys(), (path.name, line)
        events.append(event)
    return events


def test_api_and_worker_write_only_json_lines(smtp: FakeSmtp, fakes: Any) -> None:
    stack = Stack("logs", env={**provider_env(smtp, fakes), "HERALD_LOG_LEVEL": "INFO"})
    try:
        stack.start_worker()
        url = stack.start_api()
        client = pinpoint(url)
        app_id = client.create_app(CreateApplicationRequest={"Name": "logs"})[
            "ApplicationResponse"]["Id"]
        client.update_email_channel(ApplicationId=app_id, EmailChannelRequest={
            "FromAddress": "news@herald.test", "Identity": "herald.test", "Enabled": True})
        response = client.send_messages(ApplicationId=app_id, MessageRequest={
            "Addresses": {"reader@herald.test": {"ChannelType": "EMAIL"}},
            "MessageConfiguration": {"EmailMessage": {"Body": "hello"}}})
        result = response["MessageResponse"]["Result"]["reader@herald.test"]
        assert result["DeliveryStatus"] == "SUCCESSFUL"
        # uvicorn's own warning for a request it cannot parse
        httpx.get(url + "/healthz", headers={"Host": "bad host\x7f"}, timeout=5)
    finally:
        stack.stop()
    logs = {path.name.split("-")[-2]: path for path in ARTIFACTS.glob(f"{stack.name}-*.log")}
    api, worker = json_lines(logs["api"]), json_lines(logs["worker"])
    assert any(e["event"] == "request" and e["logger"] == "herald.api" for e in api)
    assert any(e["logger"] == "uvicorn.error" for e in api), api  # the unparseable request
    loggers = {e["logger"] for e in worker}
    # Herald's events and Celery's own lines, in one stream.
    assert "herald.delivery" in loggers
    assert any(e["logger"].startswith("celery.") and e["event"].endswith(" ready.")
               for e in worker), loggers
    assert any(e["logger"] == "celery.worker.consumer.connection" for e in worker), loggers


def test_serve_writes_only_json_lines(tmp_path: Path) -> None:
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("HERALD_")},
           "HERALD_DATA_DIR": str(tmp_path), "HERALD_SECRET_KEY": SECRET_KEY,
           "HERALD_LOG_LEVEL": "INFO"}
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen([str(VENV_BIN / "herald"), "serve", "--port", str(port)],
                                   env=env, cwd=ROOT, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        httpx.get(f"http://127.0.0.1:{port}/v1/apps/{uuid.uuid4().hex}", timeout=5)
    finally:
        process.terminate()
        process.wait(15)
    events = json_lines(log)
    names = {e["logger"] for e in events}
    assert "alembic.runtime.migration" in names, names  # a library's lines, as JSON
    assert any(e["event"] == "herald embedded" for e in events)
    assert any(e["event"] == "access key" for e in events)
