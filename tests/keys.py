"""Throwaway credentials for channel configuration in tests."""

from __future__ import annotations

import json

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


def p8_key() -> str:
    """An APNs-style .p8 token key: PKCS#8 PEM of an EC P-256 private key."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def service_account_json(token_uri: str, project_id: str = "herald-test") -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return json.dumps({
        "type": "service_account", "project_id": project_id, "private_key_id": "k1",
        "private_key": pem, "client_email": f"herald@{project_id}.iam.gserviceaccount.com",
        "token_uri": token_uri,
    })
