"""TLS certificates for a SuperLink when the operator gives none: a private CA and a server certificate.

flwr 1.42's SuperLink serves its Fleet, Control and Runtime APIs over one HTTPS port with one
certificate; the SuperExec it starts connects back over 127.0.0.1, so the certificate always names
localhost and the loopback addresses besides the machine's own names. Sites trust the CA certificate.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_NAME = "ca.crt"
CERTIFICATE_NAME = "server.pem"
PRIVATE_KEY_NAME = "server.key"
_VALID_DAYS = 825  # the longest validity current TLS clients accept for a server certificate


@dataclass(frozen=True)
class TlsFiles:
    """Paths of the three PEM files a SuperLink needs; sites only need `ca_certificate`."""

    ca_certificate: Path
    certificate: Path
    private_key: Path


def default_names(host: str = "") -> list[str]:
    """localhost, the loopback addresses, this machine's names and `host` when it is a real address."""
    names = ["localhost", "127.0.0.1", "::1", socket.gethostname(), socket.getfqdn()]
    if host and host not in ("0.0.0.0", "::", "[::]"):
        names.append(host)
    return list(dict.fromkeys(name for name in names if name))


def _subject_names(names: Iterable[str]) -> list[x509.GeneralName]:
    entries: list[x509.GeneralName] = []
    for name in names:
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            entries.append(x509.DNSName(name))
    return entries


def _write_pem(path: Path, data: bytes, mode: int) -> None:
    """Write a PEM file with `mode` from the start, so a private key is never world-readable."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(data)
    os.chmod(path, mode)


def _private_key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def generate_tls_files(out_dir: str | Path, names: Iterable[str]) -> TlsFiles:
    """Write ca.crt, server.pem and server.key (mode 0600) into out_dir for the given host names/IPs."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    start, end = now - datetime.timedelta(minutes=5), now + datetime.timedelta(days=_VALID_DAYS)

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "FedSeg federation CA")])
    ca_certificate = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                          key_encipherment=False, data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )

    server_key = ec.generate_private_key(ec.SECP384R1())
    server_certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "FedSeg SuperLink")]))
        .issuer_name(ca_name).public_key(server_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(start).not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(_subject_names(names)), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA384())
    )

    files = TlsFiles(out_dir / CA_NAME, out_dir / CERTIFICATE_NAME, out_dir / PRIVATE_KEY_NAME)
    _write_pem(files.ca_certificate, ca_certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    _write_pem(files.certificate, server_certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    _write_pem(files.private_key, _private_key_pem(server_key), 0o600)
    return files


def existing_or_new_tls_files(out_dir: str | Path, names: Iterable[str]) -> TlsFiles:
    """The certificates generated earlier into out_dir (sites already trust that CA), else new ones."""
    out_dir = Path(out_dir)
    files = TlsFiles(out_dir / CA_NAME, out_dir / CERTIFICATE_NAME, out_dir / PRIVATE_KEY_NAME)
    if all(path.is_file() for path in (files.ca_certificate, files.certificate, files.private_key)):
        return files
    return generate_tls_files(out_dir, names)
