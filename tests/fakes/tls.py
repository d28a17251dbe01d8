"""Throwaway TLS material for the provider fakes: a test CA, server and client certificates.

Every fake that speaks TLS (APNs, FCM, SMTPS, ...) needs a server certificate the code under
test will trust. Herald trusts extra CAs through ``HERALD_CA_BUNDLE`` (``Settings.ca_bundle``),
so a test points that at :attr:`CertificateAuthority.ca_path` and the fake serves a certificate
from :meth:`CertificateAuthority.issue_server_files`.

    ca_path, cert_path, key_path = make_tls_files()          # one-shot, fresh CA

    ca = default_ca()                                        # one CA per test session
    files = ca.issue_server_files()
    cert_pem, key_pem = ca.issue_client_cert("Apple Push Services: com.example", uid="com.example")

Keys are EC P-256: generating them takes microseconds, where RSA takes tens of milliseconds.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
import tempfile
from pathlib import Path
from typing import NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


class TlsFiles(NamedTuple):
    """PEM files for a TLS server: the CA to trust, the server certificate and its key."""

    ca_path: Path
    cert_path: Path
    key_path: Path


def _private_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


class CertificateAuthority:
    """A CA that exists only for this test run, its files in ``directory`` (a new temporary
    directory, removed when the object is collected, unless one is given)."""

    def __init__(self, directory: Path | None = None, name: str = "Herald Test CA") -> None:
        if directory is None:
            self._tmp: tempfile.TemporaryDirectory[str] | None = tempfile.TemporaryDirectory(
                prefix="herald-tls-"
            )
            directory = Path(self._tmp.name)
        else:
            self._tmp = None
            directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        self.certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )
        self.ca_pem = self.certificate.public_bytes(serialization.Encoding.PEM).decode()
        self.ca_path = _write(directory / "ca.pem", self.ca_pem)
        self._issued = 0

    def _issue(
        self,
        subject: x509.Name,
        usage: x509.ObjectIdentifier,
        san: x509.SubjectAlternativeName | None,
        days: float,
    ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        not_after = now + datetime.timedelta(days=days)
        not_before = min(
            now - datetime.timedelta(minutes=5), not_after - datetime.timedelta(days=1)
        )
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if san is not None:
            builder = builder.add_extension(san, critical=False)
        return builder.sign(self.key, hashes.SHA256()), key

    def issue_server_files(
        self, hosts: tuple[str, ...] = ("127.0.0.1", "localhost", "::1")
    ) -> TlsFiles:
        """A server certificate valid for ``hosts`` (IP addresses or DNS names), as files."""
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
        cert, key = self._issue(
            subject, ExtendedKeyUsageOID.SERVER_AUTH, x509.SubjectAlternativeName(names), days=2
        )
        self._issued += 1
        stem = f"server{self._issued}"
        cert_path = _write(
            self.directory / f"{stem}.pem", cert.public_bytes(serialization.Encoding.PEM).decode()
        )
        key_path = _write(self.directory / f"{stem}-key.pem", _private_pem(key), 0o600)
        return TlsFiles(self.ca_path, cert_path, key_path)

    def issue_client_cert(
        self, common_name: str, *, uid: str | None = None, days: float = 2
    ) -> tuple[str, str]:
        """A TLS client certificate and its private key, both PEM text.

        ``uid`` becomes the subject's UID attribute, where Apple puts the bundle id of an APNs
        certificate. ``days`` may be negative for an already expired certificate.
        """
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        if uid is not None:
            attributes.insert(0, x509.NameAttribute(NameOID.USER_ID, uid))
        cert, key = self._issue(
            x509.Name(attributes), ExtendedKeyUsageOID.CLIENT_AUTH, None, days=days
        )
        return cert.public_bytes(serialization.Encoding.PEM).decode(), _private_pem(key)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def make_tls_files(directory: Path | None = None) -> TlsFiles:
    """A fresh CA and a server certificate for 127.0.0.1 / localhost: ``(ca, cert, key)``."""
    ca = CertificateAuthority(directory)
    files = ca.issue_server_files()
    # The files must outlive this call: keep the CA (and its temporary directory) alive.
    _keep_alive.append(ca)
    return files


_keep_alive: list[CertificateAuthority] = []


@functools.cache
def default_ca() -> CertificateAuthority:
    """One CA shared by every fake in this process, so one ``ca_bundle`` trusts them all."""
    return CertificateAuthority()
