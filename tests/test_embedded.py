"""The embedded default (`herald serve`): one process, SQLite, an in-process worker, and a
one-step access key — what `make run` starts on a fresh machine."""

from __future__ import annotations

import configparser
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx

from tests.fakes.smtp import FakeSmtp
from tests.stack import ROOT, VENV_BIN, free_port, pinpoint


def test_serve_sends_over_smtp_and_console_with_sqlite(tmp_path: Path, smtp: FakeSmtp) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    env |= {"HERALD_DATA_DIR": str(tmp_path / "data"), "HERALD_SMTP_URL": smtp.url}
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115
    process = subprocess.Popen([str(VENV_BIN / "herald"), "serve", "--port", str(port)],
                               env=env, cwd=ROOT, stdout=log, stderr=log)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(100):
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        credentials = configparser.ConfigParser()
        credentials.read(tmp_path / "data" / "credentials")
        key = credentials["herald"]
        assert (tmp_path / "data" / "credentials").stat().st_mode & 0o077 == 0
        client = pinpoint(url, key["aws_access_key_id"], key["aws_secret_access_key"])

        app_id = client.create_app(CreateApplicationRequest={"Name": "embedded"})[
            "ApplicationResponse"]["Id"]
        client.update_email_channel(ApplicationId=app_id, EmailChannelRequest={
            "FromAddress": "dev@herald.test", "Identity": "herald.test"})
        client.update_sms_channel(ApplicationId=app_id, SMSChannelRequest={"Enabled": True})
        client.update_endpoints_batch(ApplicationId=app_id, EndpointBatchRequest={"Item": [
            {"Id": "mail", "ChannelType": "EMAIL", "Address": "embedded@x.test",
             "User": {"UserId": "u1"}},
            {"Id": "phone", "ChannelType": "SMS", "Address": "+15550003333",
             "User": {"UserId": "u2"}},
        ]})
        response = client.send_users_messages(ApplicationId=app_id, SendUsersMessageRequest={
            "MessageConfiguration": {"DefaultMessage": {"Body": "from the embedded mode"}},
            "Users": {"u1": {}, "u2": {}},
        })["SendUsersMessageResponse"]
        mail = response["Result"]["u1"]["mail"]
        phone = response["Result"]["u2"]["phone"]
        assert mail["DeliveryStatus"] == "SUCCESSFUL" and mail["StatusCode"] == 250
        assert "from the embedded mode" in smtp.to("embedded@x.test")[-1].message.get_content()
        # Everything in the data directory is the owner's alone (issue 14).
        data = tmp_path / "data"
        assert data.stat().st_mode & 0o777 == 0o700
        for name in ("herald.db", "herald.db-wal", "herald.db-shm", "secret.key"):
            assert (data / name).stat().st_mode & 0o777 == 0o600, name
        # No SMS transport configured: the console provider says so.
        assert phone["DeliveryStatus"] == "SUCCESSFUL"
        assert "console provider" in phone["StatusMessage"]

        # The README's example, as a newcomer runs it after `make run`.
        example = subprocess.run(
            [str(VENV_BIN / "python"), str(ROOT / "example.py")], capture_output=True,
            text=True, timeout=60, env={**env, "HERALD_URL": url, "AWS_PROFILE": "herald",
                                        "AWS_SHARED_CREDENTIALS_FILE":
                                        str(tmp_path / "data" / "credentials")})
        assert example.returncode == 0, example.stderr
        assert "ada ada-mail SUCCESSFUL" in example.stdout
        assert "ada ada-phone SUCCESSFUL" in example.stdout
        assert "bob bob-mail SUCCESSFUL" in example.stdout
    finally:
        process.terminate()
        process.wait(15)
        log.close()
    with sqlite3.connect(tmp_path / "data" / "herald.db") as db:
        stored = db.execute("select recipient, delivery_status, final from deliveries "
                            "order by recipient").fetchall()
    assert ("mail", "SUCCESSFUL", 1) in stored and ("phone", "SUCCESSFUL", 1) in stored
