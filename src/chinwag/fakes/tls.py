"""A throw-away certificate authority for the local fakes.

Every fake speaks TLS like the real provider, so chinwag's senders run their real TLS code
against them; they only need to trust this CA (``CHINWAG_CA_FILE``). The PKI is kept in a
directory and reused, so that ``chinwag fakes`` can be restarted without re-trusting anything and
the test suite does not pay for key generation in every test.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import ipaddress
import os
import ssl
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from chinwag.files import write_private

CA_FILE = "ca.pem"
CERT_FILE = "server.pem"
KEY_FILE = "server-key.pem"
_LOCK_FILE = ".pki.lock"
_VALIDITY = dt.timedelta(days=825)
# Regenerate well before expiry so a long-lived fake never starts with a cert about to lapse.
_RENEW_MARGIN = dt.timedelta(days=7)


@dataclass(frozen=True)
class TestPKI:
    __test__ = False  # not a pytest test class, despite the name

    ca_file: Path
    cert_file: Path
    key_file: Path


def make_pki(directory: Path) -> TestPKI:
    """A CA and a server certificate for ``localhost`` / ``127.0.0.1`` signed by it, as PEM files.

    Files already in ``directory`` are reused when they still form a valid chain. Concurrent
    callers (several test workers, a fake process and a test) share one result thanks to a lock.
    """
    directory.mkdir(parents=True, exist_ok=True)
    pki = TestPKI(directory / CA_FILE, directory / CERT_FILE, directory / KEY_FILE)
    with _locked(directory / _LOCK_FILE):
        if not _is_valid(pki):
            _generate(pki)
    return pki


def server_ssl_context(pki: TestPKI, alpn: Sequence[str] = ("h2",)) -> ssl.SSLContext:
    """A server-side TLS context presenting the fake's certificate and offering ``alpn``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(pki.cert_file, pki.key_file)
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def client_ssl_context(pki: TestPKI, alpn: Sequence[str] = ("h2",)) -> ssl.SSLContext:
    """A client context trusting only the test CA (for tests that talk to a fake directly)."""
    context = ssl.create_default_context(cafile=str(pki.ca_file))
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _is_valid(pki: TestPKI) -> bool:
    try:
        ca = x509.load_pem_x509_certificate(pki.ca_file.read_bytes())
        cert = x509.load_pem_x509_certificate(pki.cert_file.read_bytes())
        key = serialization.load_pem_private_key(pki.key_file.read_bytes(), password=None)
    except (OSError, ValueError):
        return False
    now = dt.datetime.now(dt.UTC)
    for certificate in (ca, cert):
        if not (
            certificate.not_valid_before_utc
            <= now
            < certificate.not_valid_after_utc - _RENEW_MARGIN
        ):
            return False
    ca_key = ca.public_key()
    if not isinstance(ca_key, ec.EllipticCurvePublicKey):
        return False
    try:
        ca_key.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    own = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    paired = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return own == paired


def _generate(pki: TestPKI) -> None:
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)  # tolerate small clock skew
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "chinwag fakes test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
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
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + _VALIDITY)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )

    _write(pki.ca_file, ca.public_bytes(serialization.Encoding.PEM))
    _write(pki.cert_file, cert.public_bytes(serialization.Encoding.PEM))
    _write(
        pki.key_file,
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
        private=True,
    )


def _write(path: Path, content: bytes, *, private: bool = False) -> None:
    """Write via a temporary file so a reader never sees half a PEM file."""
    if private:
        write_private(path, content)
        return
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(content)
    os.replace(temporary, path)
