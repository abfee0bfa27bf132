"""BFV contexts: the parameters, the key files `fedseg keys he` writes, and their fingerprints.

The sites share one secret key: they encrypt with it (secret-key encryption, whose ciphertexts SEAL
saves "seeded": the random half of a ciphertext travels as a 64-byte seed, so an upload is one
polynomial, not two) and decrypt with it. The server gets the public context: the same parameters and no
key at all, so it can add ciphertexts but neither read nor make them. A fingerprint of the secret key,
which the server's file carries as a label, lets admins compare keys by eye and lets each side refuse a
peer with another key before anything is decrypted into a garbage model. A context file is a header
line naming the fingerprint, then SEAL's own serialization of the parameters (and of the key).

Why BFV with N = 2048, one 40-bit coefficient prime and a 29-bit plaintext modulus: aggregation only adds
ciphertexts, so the smallest ring SEAL rates at 128-bit security carries it; a seeded upload is then 1.52
times the model's float32 bytes and the servers's sum 3.0 times; values are fixed-point integers modulo
t, so pairwise masks uniform modulo t hide one site's share even from a holder of the key
(federation.he.masking) and cancel exactly in the sum. Details: docs/security.md.

TenSEAL's `sealapi` module (SEAL 4.x's own binding) saves and loads only through file paths, so
`seal_bytes` and `seal_load` go through a private temporary folder of the process.
"""

from __future__ import annotations

import atexit
import hashlib
import itertools
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from federation.keys import write_new_file
from segmentation.errors import ConfigError

if TYPE_CHECKING:
    import tenseal.sealapi as seal

SECRET_CONTEXT_NAME = "secret.ctx"
PUBLIC_CONTEXT_NAME = "public.ctx"
_MAGIC = b"fedseg-he-context/2\n"
_EARLIER_MAGIC = b"fedseg-he-context/1\n"  # TenSEAL CKKS contexts, before the seeded BFV ones
_MAKE_ONE = "make one with `fedseg keys he --out DIR`"
_LENGTH_BYTES = 8  # the parameters' byte length, before them in a context file's payload
_Loaded = TypeVar("_Loaded")
_SCRATCH: dict[int, Path] = {}  # process id -> its scratch folder
_NAMES = itertools.count()


class HeContextError(ConfigError):
    """A context file that is missing, unreadable, of another version, or of the wrong kind for its reader."""


@dataclass(frozen=True)
class HeParameters:
    """BFV parameters: ring degree N (N integer slots per ciphertext), the bit size of the one
    coefficient prime, the bit size of the plaintext modulus t (a prime that allows batching), and the
    fraction bits of the fixed-point code: a value v travels as round(v * 2**fraction_bits) modulo t."""

    poly_modulus_degree: int = 2048
    coeff_modulus_bits: int = 40
    plain_modulus_bits: int = 29
    fraction_bits: int = 24

    def __post_init__(self) -> None:
        degree = self.poly_modulus_degree
        if degree < 1024 or degree & (degree - 1):
            raise ValueError(f"poly_modulus_degree must be a power of two >= 1024, got {degree}")
        if not 17 <= self.plain_modulus_bits < self.coeff_modulus_bits <= 60:
            raise ValueError(f"need 17 <= plain_modulus_bits < coeff_modulus_bits <= 60, got "
                             f"{self.plain_modulus_bits} and {self.coeff_modulus_bits}")
        if not 0 < self.fraction_bits < self.plain_modulus_bits - 2:
            raise ValueError(f"fraction_bits must be in 1..{self.plain_modulus_bits - 3}, "
                             f"got {self.fraction_bits}")


DEFAULT_PARAMETERS = HeParameters()


def _scratch_folder() -> Path:
    """This process's private folder (mode 0700) for SEAL's files, made once and removed at exit: a
    folder per call cost more than the cryptography."""
    folder = _SCRATCH.get(os.getpid())
    if folder is None or not folder.is_dir():
        folder = Path(tempfile.mkdtemp(prefix="fedseg-seal-"))
        atexit.register(shutil.rmtree, folder, True)
        _SCRATCH[os.getpid()] = folder  # a forked child makes its own
    return folder


def _scratch_file() -> Path:
    return _scratch_folder() / f"{threading.get_ident()}-{next(_NAMES)}"


def seal_bytes(item: Any) -> bytes:
    """SEAL's serialization of a parameter set, key, ciphertext or Serializable (zstd-compressed)."""
    path = _scratch_file()
    try:
        item.save(str(path))
        return path.read_bytes()
    finally:
        path.unlink(missing_ok=True)


def seal_load(make: Callable[[], _Loaded], data: bytes, *context: Any) -> _Loaded:
    """A new SEAL object of make() loaded from data (with the SEAL context when the type needs one);
    SEAL checks the data is valid for the context and raises otherwise."""
    item = make()
    path = _scratch_file()
    try:
        path.write_bytes(data)
        item.load(*context, str(path))  # type: ignore[attr-defined]
    finally:
        path.unlink(missing_ok=True)
    return item


class HeContext:
    """SEAL's BFV context, the secret key when this side holds it, and what FedSeg reads from them."""

    def __init__(self, parameters: HeParameters, secret_key: seal.SecretKey | None, fingerprint: str) -> None:
        import tenseal.sealapi as seal

        self.parameters = parameters
        self.fingerprint = fingerprint
        self.encryption_parameters = _encryption_parameters(parameters)
        self.seal = seal.SEALContext(self.encryption_parameters, True, seal.SEC_LEVEL_TYPE.TC128)
        if not self.seal.parameters_set():
            raise ConfigError(f"{parameters} are not valid BFV parameters at 128-bit security "
                              f"({self.seal.parameters_error_message()})")
        self.secret_key = secret_key
        self.parms_id = self.seal.first_parms_id()
        self.plain_modulus: int = self.encryption_parameters.plain_modulus().value()

    @property
    def has_secret_key(self) -> bool:
        return self.secret_key is not None

    @property
    def slots(self) -> int:
        """Values per ciphertext."""
        return self.parameters.poly_modulus_degree

    @property
    def step(self) -> float:
        """The fixed-point code's step: a value is rounded to a multiple of it."""
        return 2.0 ** -self.parameters.fraction_bits

    @property
    def capacity(self) -> float:
        """The largest |value| a site may send: a sum of shares weighted to add up to at most 1 then stays
        within half the range t / 2 step that decodes correctly (the other half is headroom for rounding)."""
        return (self.plain_modulus // 4) * self.step

    @cached_property
    def encoder(self) -> seal.BatchEncoder:
        import tenseal.sealapi as seal

        return seal.BatchEncoder(self.seal)

    @cached_property
    def evaluator(self) -> seal.Evaluator:
        import tenseal.sealapi as seal

        return seal.Evaluator(self.seal)

    @cached_property
    def encryptor(self) -> seal.Encryptor:
        import tenseal.sealapi as seal

        return seal.Encryptor(self.seal, self._require_secret_key("encrypt"))

    @cached_property
    def decryptor(self) -> seal.Decryptor:
        import tenseal.sealapi as seal

        return seal.Decryptor(self.seal, self._require_secret_key("decrypt"))

    def _require_secret_key(self, action: str) -> seal.SecretKey:
        if self.secret_key is None:
            raise HeContextError(f"this context holds no secret key and cannot {action}")
        return self.secret_key

    def public(self) -> HeContext:
        """The server's view: parameters only, no key (it cannot decrypt, nor encrypt)."""
        return HeContext(self.parameters, None, self.fingerprint)

    def file_bytes(self) -> bytes:
        """What a context file holds: a header naming the key's fingerprint, then the parameters' length,
        SEAL's serialization of the parameters and, in the sites' file, of the secret key."""
        parameters = seal_bytes(self.encryption_parameters)
        key = seal_bytes(self.secret_key) if self.secret_key is not None else b""
        header = _MAGIC + self.fingerprint.encode() + b"\n" + _fraction_line(self.parameters)
        return header + len(parameters).to_bytes(_LENGTH_BYTES, "little") + parameters + key


def _fraction_line(parameters: HeParameters) -> bytes:
    return f"fraction-bits {parameters.fraction_bits}\n".encode()


def _encryption_parameters(parameters: HeParameters) -> seal.EncryptionParameters:
    import tenseal.sealapi as seal

    encryption = seal.EncryptionParameters(seal.SCHEME_TYPE.BFV)
    encryption.set_poly_modulus_degree(parameters.poly_modulus_degree)
    try:
        encryption.set_coeff_modulus(seal.CoeffModulus.Create(parameters.poly_modulus_degree,
                                                              [parameters.coeff_modulus_bits]))
        encryption.set_plain_modulus(seal.PlainModulus.Batching(parameters.poly_modulus_degree,
                                                                parameters.plain_modulus_bits))
    except (ValueError, RuntimeError) as error:
        raise ConfigError(f"{parameters} are not valid BFV parameters: {error}") from None
    return encryption


def key_fingerprint(parameters: HeParameters, secret_key: seal.SecretKey) -> str:
    """A short, stable name of a secret key: 16 hex digits of a SHA-256 of the parameters and the key.

    Only holders of the secret key can compute it; the server's file carries it as a label. The hash
    of a key with thousands of random coefficients reveals nothing usable about it.
    """
    data = seal_bytes(_encryption_parameters(parameters)) + seal_bytes(secret_key)
    digest = hashlib.sha256(b"fedseg-he-key/2\0" + _fraction_line(parameters) + data).hexdigest()[:16]
    return "-".join(digest[index:index + 4] for index in range(0, 16, 4))


def create_context(parameters: HeParameters = DEFAULT_PARAMETERS) -> HeContext:
    """A new secret context; SEAL refuses parameters below 128-bit security."""
    import tenseal.sealapi as seal

    public = HeContext(parameters, None, "")
    secret_key = seal.KeyGenerator(public.seal).secret_key()
    return HeContext(parameters, secret_key, key_fingerprint(parameters, secret_key))


def context_from_bytes(data: bytes, source: str) -> HeContext:
    """A context file's context (file_bytes); HeContextError when it is not one or is damaged."""
    import tenseal.sealapi as seal

    if data.startswith(_EARLIER_MAGIC):
        raise HeContextError(f"{source} is a CKKS context of an earlier FedSeg version; every site and the "
                             f"server need new keys ({_MAKE_ONE})")
    if not data.startswith(_MAGIC):
        raise HeContextError(f"{source} is not a FedSeg HE context ({_MAKE_ONE})")
    fingerprint, _, rest = data[len(_MAGIC):].partition(b"\n")
    fraction, _, rest = rest.partition(b"\n")
    try:
        label, bits = fraction.decode().split()
        length = int.from_bytes(rest[:_LENGTH_BYTES], "little")
        stored = rest[_LENGTH_BYTES:_LENGTH_BYTES + length]
        encryption = seal_load(lambda: seal.EncryptionParameters(seal.SCHEME_TYPE.BFV), stored)
        parameters = HeParameters(encryption.poly_modulus_degree(),
                                  sum(prime.bit_count() for prime in encryption.coeff_modulus()),
                                  encryption.plain_modulus().bit_count(), int(bits))
        context = HeContext(parameters, None, fingerprint.decode())
        key = rest[_LENGTH_BYTES + length:]
        same = seal_bytes(context.encryption_parameters) == stored
        if label != "fraction-bits" or not same:
            raise ValueError("not FedSeg's layout")
        if key:
            context = HeContext(parameters, seal_load(seal.SecretKey, key, context.seal), context.fingerprint)
    except (ValueError, RuntimeError, TypeError, UnicodeDecodeError, ConfigError):
        raise HeContextError(f"{source} is damaged: not a readable FedSeg HE context ({_MAKE_ONE})") from None
    secret_key = context.secret_key
    if secret_key is not None and key_fingerprint(parameters, secret_key) != context.fingerprint:
        raise HeContextError(f"{source} is damaged: its secret key does not have the fingerprint it names")
    return context


def _read(path: str | Path) -> HeContext:
    try:
        stat = Path(path).stat()
    except OSError as error:
        raise HeContextError(f"cannot read the HE context {path}: {error.strerror}") from None
    return _read_file(str(path), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=8)
def _read_file(path: str, mtime_ns: int, size: int) -> HeContext:
    """A context file's context, read once while the file stays as it is (its time and size are part of
    the key): a site worker that answers every message of a run loads its key once, not per message."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise HeContextError(f"cannot read the HE context {path}: {error.strerror}") from None
    return context_from_bytes(data, path)


def load_secret_context(path: str | Path) -> HeContext:
    """A site's context: it must hold the secret key, or the site could not decrypt the global model."""
    context = _read(path)
    if not context.has_secret_key:
        raise HeContextError(f"{path} holds no secret key; sites need the {SECRET_CONTEXT_NAME} "
                             "made by `fedseg keys he`")
    return context


def load_public_context(path: str | Path) -> HeContext:
    """The server's context: refused when it holds a secret key, so the server can never decrypt."""
    context = _read(path)
    if context.has_secret_key:
        raise HeContextError(f"{path} holds a secret key, which the server must never have; give the server "
                             f"the {PUBLIC_CONTEXT_NAME} made by `fedseg keys he`")
    return context


@dataclass(frozen=True)
class HeKeyFiles:
    """Where `fedseg keys he` wrote the two contexts, and their common fingerprint."""

    secret_context: Path
    public_context: Path
    fingerprint: str

    def server_table(self) -> dict[str, Any]:
        """The [he] table of a server.toml that uses these keys."""
        return {"enabled": True, "public_context": str(self.public_context)}

    def site_table(self) -> dict[str, Any]:
        """The [he] table of a site.toml that uses these keys."""
        return {"enabled": True, "secret_context": str(self.secret_context)}


def write_he_keys(out_dir: str | Path, parameters: HeParameters = DEFAULT_PARAMETERS) -> HeKeyFiles:
    """Write secret.ctx (mode 0600, for the sites) and public.ctx (for the server); never overwrites."""
    out_dir = Path(out_dir)
    secret_path, public_path = out_dir / SECRET_CONTEXT_NAME, out_dir / PUBLIC_CONTEXT_NAME
    for path in (secret_path, public_path):
        if path.exists():
            raise ConfigError(f"{path} already exists; remove it or choose another --out folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ConfigError(f"cannot create the key folder {out_dir}: {error.strerror}") from None
    context = create_context(parameters)
    write_new_file(secret_path, context.file_bytes(), 0o600)
    write_new_file(public_path, context.public().file_bytes(), 0o644)
    return HeKeyFiles(secret_path, public_path, context.fingerprint)
