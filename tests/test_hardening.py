"""Issue 14, part B: what one tenant (a key scoped to its app) or an unsigned client must not
be able to do — against the live stack with boto3, and against the plain functions."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from botocore.exceptions import ClientError
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import text
from sqlalchemy.engine import Engine

from tests.stack import ROOT, SECRET_KEY, VENV_BIN, pinpoint
from worker import crypto
from worker.config import ConfigError, Settings, load_settings

DEPLOY = ROOT / "deploy"


def _herald(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HERALD_")}
    return subprocess.run([str(VENV_BIN / "herald"), *args], env={**clean, **env}, cwd=ROOT,
                          capture_output=True, text=True, timeout=60)


def _example_values(path: Path) -> dict[str, str]:
    if path.suffix == ".yaml":
        return dict(yaml.safe_load(path.read_text())["stringData"])
    values = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            name, _, value = line.partition("=")
            values[name] = value
    return values


# --- item 4: shipped example keys, weak secrets, the at-rest key derivation -------------------


@pytest.mark.parametrize("example", ["k8s/secret.example.yaml", "systemd/herald.env.example"])
def test_the_shipped_example_keys_do_not_start_herald(example: str) -> None:
    values = _example_values(DEPLOY / example)
    env = {name: values[name] for name in (
        "HERALD_SECRET_KEY", "HERALD_ROOT_ACCESS_KEY_ID", "HERALD_ROOT_SECRET_ACCESS_KEY")}
    result = _herald({**env, "HERALD_DATABASE_URL": "sqlite://"}, "keys", "list")
    assert result.returncode != 0
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1, message
    for name in env:
        assert name in message
    assert "token_urlsafe(32)" in message


@pytest.mark.parametrize(("variable", "value"), [
    ("HERALD_SECRET_KEY", "hunter2"),
    ("HERALD_SECRET_KEY", "change-me"),
    ("HERALD_SECRET_KEY", "a" * 64),
    ("HERALD_ROOT_SECRET_ACCESS_KEY", "Q7"),
    ("HERALD_ROOT_SECRET_ACCESS_KEY", "change-me"),
    ("HERALD_ROOT_ACCESS_KEY_ID", "HKCHANGEME000000001"),
])
def test_weak_or_example_secrets_are_refused_at_start_up(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv("HERALD_SECRET_KEY", SECRET_KEY)
    monkeypatch.setenv("HERALD_ROOT_ACCESS_KEY_ID", "HKTESTROOTKEY0000001")
    monkeypatch.setenv("HERALD_ROOT_SECRET_ACCESS_KEY", SECRET_KEY[::-1])
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError) as excinfo:
        load_settings()
    assert variable in str(excinfo.value)
    assert f"={value}" not in str(excinfo.value) and f"'{value}'" not in str(excinfo.value)


def _legacy_token(secret_key: str, plaintext: bytes) -> bytes:
    """Encrypted as Herald did before issue 14: Fernet keyed by one SHA-256 of the secret."""
    key = base64.urlsafe_b64encode(hashlib.sha256(secret_key.encode()).digest())
    return Fernet(key).encrypt(plaintext)


def test_the_at_rest_key_comes_from_a_kdf_and_old_ciphertexts_still_decrypt() -> None:
    settings = Settings(secret_key=SECRET_KEY, database_url="sqlite://")
    legacy = base64.urlsafe_b64encode(hashlib.sha256(SECRET_KEY.encode()).digest())
    assert settings.fernet_key() != legacy
    old = _legacy_token(SECRET_KEY, b'{"ServiceJson": "old"}')
    assert crypto.decrypt_json(old, settings) == {"ServiceJson": "old"}
    new = crypto.encrypt(b"new", settings)
    with pytest.raises(InvalidToken):
        Fernet(legacy).decrypt(new)  # written with the new derivation only
    rotated = crypto.reencrypt(old, settings)
    assert Fernet(settings.fernet_key()).decrypt(rotated) == b'{"ServiceJson": "old"}'


def test_a_previous_weak_secret_key_still_reads_what_it_encrypted() -> None:
    old = _legacy_token("secret", b"channel credentials")
    moved = Settings(secret_key=SECRET_KEY, previous_secret_key="secret",
                     database_url="sqlite://")
    assert crypto.decrypt(old, moved) == b"channel credentials"
    with pytest.raises(crypto.SecretDecryptionError):
        crypto.decrypt(old, Settings(secret_key=SECRET_KEY, database_url="sqlite://"))


def test_an_access_key_stored_before_the_upgrade_still_signs(
    api_url: str, app_id: str, db: Engine
) -> None:
    key_id = "HKOLD" + uuid.uuid4().hex[:15].upper()
    secret = base64.b64encode(os.urandom(30)).decode()
    with db.begin() as conn:
        conn.execute(
            text("INSERT INTO access_keys (id, secret, app_ids, description, created_at) "
                 "VALUES (:id, :secret, NULL, 'pre-upgrade', now())"),
            {"id": key_id, "secret": _legacy_token(SECRET_KEY, secret.encode())},
        )
    client = pinpoint(api_url, key_id, secret)
    assert client.get_app(ApplicationId=app_id)["ApplicationResponse"]["Id"] == app_id
    with pytest.raises(ClientError):
        pinpoint(api_url, key_id, secret[::-1]).get_app(ApplicationId=app_id)


def test_embedded_default_still_generates_a_key_herald_accepts(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "data")
    key = settings.fernet_key()
    assert (tmp_path / "data" / "secret.key").stat().st_mode & 0o777 == 0o600
    assert Settings(data_dir=tmp_path / "data").fernet_key() == key

