"""CKKS contexts: the parameters, the key files `fedseg keys he` writes, and their fingerprints.

The sites share one secret context: they encrypt with the secret key (symmetric CKKS: faster and less
noisy than public-key encryption) and decrypt with it. The server gets the public context: the same
parameters and scale and no key at all, so it can add ciphertexts but neither read nor make them. A
fingerprint of the secret key, which the server's file carries as a label, lets admins compare keys by
eye and lets each side refuse a peer with another key before anything is decrypted into a garbage
model. A context file is a header line naming the fingerprint, then TenSEAL's serialization.

Aggregation only adds ciphertexts, so one coefficient modulus prime carries the data (TenSEAL also
needs a second, "special" prime for the key-switching keys it always makes; it never travels with a
ciphertext). Why these parameters: docs/security.md.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from federation.keys import write_new_file
from segmentation.errors import ConfigError

if TYPE_CHECKING:
    import tenseal as ts

SECRET_CONTEXT_NAME = "secret.ctx"
PUBLIC_CONTEXT_NAME = "public.ctx"
_MAGIC = b"fedseg-he-context/1\n"
_MAKE_ONE = "make one with `fedseg keys he --out DIR`"


class HeContextError(ConfigError):
    """A context file that is missing, unreadable, not CKKS, or of the wrong kind for its reader."""


@dataclass(frozen=True)
class CkksParameters:
    """CKKS parameters: ring degree N (N/2 values per ciphertext), the primes' bit sizes (the last one is
    the special prime), the scale 2**scale_bits that fixed-point encodes the values, and whether the
    sites encrypt with the secret key (symmetric) or with a public key."""

    poly_modulus_degree: int = 4096
    coeff_mod_bit_sizes: tuple[int, ...] = (56, 20)
    scale_bits: int = 33
    symmetric: bool = True  # encrypt with the secret key (the sites all hold it), not a public key

    def __post_init__(self) -> None:
        degree = self.poly_modulus_degree
        if degree < 1024 or degree & (degree - 1):
            raise ValueError(f"poly_modulus_degree must be a power of two >= 1024, got {degree}")
        primes = self.coeff_mod_bit_sizes
        if len(primes) < 2 or not all(20 <= bits <= 60 for bits in primes):
            raise ValueError(f"coeff_mod_bit_sizes needs at least two primes of 20-60 bits, got {primes}")
        if not 0 < self.scale_bits < sum(primes[:-1]):
            raise ValueError(f"scale_bits must be below the data primes' {sum(primes[:-1])} bits, "
                             f"got {self.scale_bits}")


DEFAULT_PARAMETERS = CkksParameters()
# NVFlare's default CKKS parameters, the reference row of bench/he_aggregation.py.
NVFLARE_PARAMETERS = CkksParameters(8192, (60, 40, 40), 40, symmetric=False)


class HeContext:
    """A TenSEAL CKKS context, its key's fingerprint and what FedSeg reads from it: size, scale, capacity."""

    def __init__(self, context: ts.Context, fingerprint: str) -> None:
        self.tenseal = context
        self.fingerprint = fingerprint
        seal = context.seal_context().data
        data = seal.first_context_data()
        self.poly_modulus_degree: int = data.parms().poly_modulus_degree()
        self.data_bits: int = data.total_coeff_modulus_bit_count()
        self.parms_id = seal.first_parms_id()
        self.scale: float = context.global_scale

    @property
    def has_secret_key(self) -> bool:
        return self.tenseal.has_secret_key()

    @property
    def slots(self) -> int:
        """Values per ciphertext."""
        return self.poly_modulus_degree // 2

    @property
    def capacity(self) -> float:
        """The largest |value| a ciphertext (a sum of several) may hold and still decrypt correctly.

        Decryption reads scale * value modulo the data prime q, so |value| must stay below q / (2 scale);
        one more halving leaves room for the noise and the prime being a little under 2**data_bits.
        """
        return 2.0 ** (self.data_bits - 2) / self.scale

    def public(self) -> HeContext:
        """The server's view: parameters and scale only, no key (it cannot decrypt, nor encrypt)."""
        data = self.tenseal.serialize(save_public_key=False, save_secret_key=False,
                                      save_galois_keys=False, save_relin_keys=False)
        return HeContext(_tenseal_context(data, "the public part of a context"), self.fingerprint)

    def file_bytes(self) -> bytes:
        """What a context file holds: a header naming the key's fingerprint, then TenSEAL's serialization
        (with the secret key when this context has it; no key-switching keys, addition needs none)."""
        secret = self.has_secret_key
        data = self.tenseal.serialize(save_public_key=False, save_secret_key=secret,
                                      save_galois_keys=False, save_relin_keys=False)
        return _MAGIC + self.fingerprint.encode() + b"\n" + data


def key_fingerprint(context: ts.Context) -> str:
    """A short, stable name of a secret key: 16 hex digits of a SHA-256 of the secret context.

    Only holders of the secret key can compute it; the server's file carries it as a label. The hash
    of a key with thousands of random coefficients reveals nothing usable about it.
    """
    secret = context.serialize(save_public_key=False, save_secret_key=True,
                               save_galois_keys=False, save_relin_keys=False)
    digest = hashlib.sha256(b"fedseg-he-key\0" + secret).hexdigest()[:16]
    return "-".join(digest[index:index + 4] for index in range(0, 16, 4))


def create_context(parameters: CkksParameters = DEFAULT_PARAMETERS) -> HeContext:
    """A new secret CKKS context; SEAL refuses parameters below 128-bit security."""
    import tenseal as ts

    encryption = ts.ENCRYPTION_TYPE.SYMMETRIC if parameters.symmetric else ts.ENCRYPTION_TYPE.ASYMMETRIC
    try:
        context = ts.context(ts.SCHEME_TYPE.CKKS, parameters.poly_modulus_degree,
                             coeff_mod_bit_sizes=list(parameters.coeff_mod_bit_sizes),
                             encryption_type=encryption, n_threads=1)
    except ValueError:
        raise ConfigError(f"{parameters} are not valid CKKS parameters at 128-bit security") from None
    context.global_scale = 2.0 ** parameters.scale_bits
    return HeContext(context, key_fingerprint(context))


def _tenseal_context(data: bytes, source: str) -> ts.Context:
    import tenseal as ts

    try:
        context = ts.context_from(data, n_threads=1)
        scheme = context.seal_context().data.first_context_data().parms().scheme()
        usable = scheme == ts.SCHEME_TYPE.CKKS.value and context.global_scale > 0
    except (ValueError, RuntimeError, TypeError):
        usable = False
    if not usable:
        raise HeContextError(f"{source} is not a TenSEAL CKKS context ({_MAKE_ONE})")
    return context


def context_from_bytes(data: bytes, source: str) -> HeContext:
    """A context file's context (file_bytes); HeContextError when it is not one or is damaged."""
    if not data.startswith(_MAGIC):
        raise HeContextError(f"{source} is not a FedSeg HE context ({_MAKE_ONE})")
    fingerprint, _, payload = data[len(_MAGIC):].partition(b"\n")
    context = HeContext(_tenseal_context(payload, source), fingerprint.decode(errors="replace"))
    if context.has_secret_key and key_fingerprint(context.tenseal) != context.fingerprint:
        raise HeContextError(f"{source} is damaged: its secret key does not have the fingerprint it names")
    return context


def _read(path: str | Path) -> HeContext:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise HeContextError(f"cannot read the HE context {path}: {error.strerror}") from None
    return context_from_bytes(data, str(path))


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


def write_he_keys(out_dir: str | Path, parameters: CkksParameters = DEFAULT_PARAMETERS) -> HeKeyFiles:
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
