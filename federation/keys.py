"""A site's authentication key pair for Flower SuperNode authentication (flwr 1.42).

flwr 1.42 wants an ECDSA key on a NIST curve in OpenSSH format: flower-supernode reads the private
key with load_ssh_private_key (--auth-supernode-private-key), and the SuperLink (started with
--enable-supernode-auth) admits the nodes whose public keys were registered with
`flwr supernode register KEY.pub`, which reads them with load_ssh_public_key. We make P-384 keys,
as Flower's own key helpers and documentation do.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from segmentation.errors import ConfigError

_NIST_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)
_KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_MAKE_ONE = "make one with `fedseg keys node`"


@dataclass(frozen=True)
class NodeKeyPair:
    """Where a new key pair was written, and the public key's SHA256 fingerprint (as ssh-keygen -l)."""

    private_key: Path
    public_key: Path
    fingerprint: str


def fingerprint(public_key: ec.EllipticCurvePublicKey) -> str:
    """'SHA256:<base64>' of the OpenSSH key blob, the same string `ssh-keygen -lf KEY.pub` prints."""
    line = public_key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    blob = base64.b64decode(line.split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def generate_node_keys(out_dir: str | Path, name: str = "node") -> NodeKeyPair:
    """Write NAME.key (private, mode 0600) and NAME.pub (OpenSSH) into out_dir; never overwrites."""
    if not _KEY_NAME.fullmatch(name):
        raise ConfigError(f"key name must be 1-64 letters, digits, '.', '_' or '-', got {name!r}")
    out_dir = Path(out_dir)
    private_path, public_path = out_dir / f"{name}.key", out_dir / f"{name}.pub"
    for path in (private_path, public_path):
        if path.exists():
            raise ConfigError(f"{path} already exists; remove it or choose another name with --name")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create the key folder {out_dir}: {error.strerror}") from None

    private_key = ec.generate_private_key(ec.SECP384R1())
    private_bytes = private_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    public_line = private_key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    write_new_file(private_path, private_bytes, 0o600)
    write_new_file(public_path, public_line + f" fedseg-node-{name}\n".encode(), 0o644)
    return NodeKeyPair(private_path, public_path, fingerprint(private_key.public_key()))


def write_new_file(path: Path, data: bytes, mode: int) -> None:
    """Create `path` with `mode` from the start (no moment where a secret key is world-readable);
    an existing file is never overwritten."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    except FileExistsError:
        raise ConfigError(f"{path} already exists; remove it or write the keys somewhere else") from None
    with os.fdopen(descriptor, "wb") as stream:
        stream.write(data)
    os.chmod(path, mode)  # the umask may have removed bits; set exactly what was asked


def load_public_key(path: str | Path) -> ec.EllipticCurvePublicKey:
    """A site's public key as the SuperLink will accept it: OpenSSH ECDSA on a NIST curve."""
    try:
        key = serialization.load_ssh_public_key(Path(path).read_bytes())
    except OSError as error:
        raise ConfigError(f"cannot read the public key {path}: {error.strerror}") from None
    except (ValueError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, _NIST_CURVES):
        raise ConfigError(f"{path} is not an ECDSA public key in OpenSSH format ({_MAKE_ONE})")
    return key


def load_private_key(path: str | Path) -> ec.EllipticCurvePrivateKey:
    """A site's private key as flower-supernode will read it: unencrypted OpenSSH ECDSA."""
    try:
        key = serialization.load_ssh_private_key(Path(path).read_bytes(), None)
    except OSError as error:
        raise ConfigError(f"cannot read the private key {path}: {error.strerror}") from None
    except (ValueError, TypeError, UnsupportedAlgorithm):
        key = None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"{path} is not an unencrypted ECDSA private key in OpenSSH format ({_MAKE_ONE})")
    return key
