"""A site's node key pair and the federation's HE keys, made from the GUI without losing old ones.

federation.keys and federation.he.context never overwrite a key file. Here the keys dialog first asks
what is already in the folder (read_*), so it can offer "Replace" or "Use the existing keys"; on Replace
the old files are set aside under a new name (segmentation.atomic.set_aside), never deleted. Only the
public half of a pair is ever exported: a site's .pub goes to the operator, public.ctx to the server.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from segmentation.atomic import atomic_open, set_aside
from segmentation.errors import ConfigError

DEFAULT_KEY_NAME = "node"
REPLACED = "replaced"  # the reason in a set-aside key's name: NAME.replaced-YYYYmmdd-HHMMSS
_NOT_IN_NAME = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_NAME = 64


class KeysExistError(ConfigError):
    """Key files are already where new ones would go; the user chooses Replace or Use the existing."""


@dataclass(frozen=True)
class KeySet:
    """Two key files that belong together: the one that stays (a node's private key, the sites' secret
    HE context), the public one to hand out, their common fingerprint, and old files set aside."""

    private: Path
    public: Path
    fingerprint: str
    set_aside: tuple[Path, ...] = ()


def key_name(site_name: str) -> str:
    """A node key's file stem from a site's display name ("CT Hospital" -> "CT-Hospital")."""
    stem = _NOT_IN_NAME.sub("-", site_name.strip()).lstrip("._-")[:_MAX_NAME].rstrip("._-")
    return stem or DEFAULT_KEY_NAME


def node_key_files(folder: Path, name: str) -> tuple[Path, Path]:
    """Where generate_node_keys writes NAME's pair: (private NAME.key, public NAME.pub)."""
    return folder / f"{name}.key", folder / f"{name}.pub"


def he_key_files(folder: Path) -> tuple[Path, Path]:
    """Where write_he_keys writes the contexts: (secret.ctx, public.ctx)."""
    from federation.he.context import PUBLIC_CONTEXT_NAME, SECRET_CONTEXT_NAME

    return folder / SECRET_CONTEXT_NAME, folder / PUBLIC_CONTEXT_NAME


def make_node_keys(folder: Path, name: str, replace: bool = False) -> KeySet:
    """A new node key pair; KeysExistError when either file exists, unless `replace` sets them aside."""
    from federation.keys import generate_node_keys

    def write() -> KeySet:
        pair = generate_node_keys(folder, name)
        return KeySet(pair.private_key, pair.public_key, pair.fingerprint)

    return _make(node_key_files(folder, name), write, replace)


def make_he_keys(folder: Path, replace: bool = False) -> KeySet:
    """New HE contexts; KeysExistError when either file exists, unless `replace` sets them aside."""
    from federation.he.context import write_he_keys

    def write() -> KeySet:
        files = write_he_keys(folder)
        return KeySet(files.secret_context, files.public_context, files.fingerprint)

    return _make(he_key_files(folder), write, replace)


def _make(files: tuple[Path, Path], write: Callable[[], KeySet], replace: bool) -> KeySet:
    existing = [path for path in files if path.exists()]
    if existing and not replace:
        names = " and ".join(path.name for path in existing)
        raise KeysExistError(f"{names} already exist in {files[0].parent}; replace them (the old files are "
                             "kept under a new name) or use them")
    kept = tuple(set_aside(path, REPLACED) for path in existing)
    made = write()
    return KeySet(made.private, made.public, made.fingerprint, kept)


def read_node_keys(folder: Path, name: str) -> KeySet | None:
    """The node key pair already in `folder` (None when there is none), both halves checked as the
    SuperNode and the SuperLink will read them."""
    from federation.keys import fingerprint, load_private_key, load_public_key

    private, public = node_key_files(folder, name)
    if not _complete(private, public):
        return None
    shown = fingerprint(load_public_key(public))
    if fingerprint(load_private_key(private).public_key()) != shown:
        raise ConfigError(f"{public.name} is not the public half of {private.name}; make a new pair")
    return KeySet(private, public, shown)


def read_he_keys(folder: Path) -> KeySet | None:
    """The HE contexts already in `folder` (None when there are none): a secret one for the sites and a
    public one of the same key for the server."""
    from federation.he.context import load_public_context, load_secret_context

    secret, public = he_key_files(folder)
    if not _complete(secret, public):
        return None
    fingerprint = load_secret_context(secret).fingerprint
    if load_public_context(public).fingerprint != fingerprint:
        raise ConfigError(f"{public.name} belongs to another key than {secret.name}; make new HE keys")
    return KeySet(secret, public, fingerprint)


def _complete(private: Path, public: Path) -> bool:
    """Whether both files are there; False when neither is, a ConfigError when one is missing."""
    present = [path.exists() for path in (private, public)]
    if any(present) and not all(present):
        missing = private if not present[0] else public
        raise ConfigError(f"{missing.name} is missing beside the other key file in {missing.parent}; "
                          "make new keys")
    return all(present)


def export_target(keys: KeySet, folder: Path) -> Path:
    """Where export_public writes the public file in `folder` (same name)."""
    return folder / keys.public.name


def export_public(keys: KeySet, folder: Path, replace: bool = False) -> Path:
    """Copy the public file into `folder`; a file already there is set aside when `replace`, else
    KeysExistError. The private file is never copied."""
    target = export_target(keys, folder)
    if target.exists():
        if target.resolve() == keys.public.resolve():
            return target
        if not replace:
            raise KeysExistError(f"{target} already exists; replace it (the old file is kept under a new "
                                 "name) or choose another folder")
        set_aside(target, "backup")
    try:
        data = keys.public.read_bytes()
        with atomic_open(target, "wb") as stream:
            stream.write(data)
        target.chmod(0o644)  # public: the temporary file's owner-only mode is not wanted here
    except OSError as error:
        raise ConfigError(f"cannot copy {keys.public.name} to {folder}: {error.strerror}") from None
    return target
