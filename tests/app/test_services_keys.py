"""The keys service behind the keys dialog: it never overwrites a key, keeps replaced keys under a new
name, shows fingerprints as ssh-keygen and the HE files name them, and exports only the public half."""

import base64
import hashlib
import stat

import pytest

from app.services.keys import (
    KeysExistError,
    export_public,
    key_name,
    make_he_keys,
    make_node_keys,
    read_he_keys,
    read_node_keys,
)
from federation.he.context import load_public_context, load_secret_context
from federation.keys import fingerprint, load_private_key, load_public_key
from segmentation.errors import ConfigError


def ssh_keygen_fingerprint(public_file) -> str:
    """What `ssh-keygen -lf KEY.pub` prints: SHA-256 of the base64 blob of the OpenSSH line, unpadded."""
    blob = base64.b64decode(public_file.read_text().split()[1])
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


@pytest.mark.parametrize(("site", "stem"), [("CT Hospital", "CT-Hospital"), ("  ", "node"),
                                            ("../Clinic/MR", "Clinic-MR"), ("ünï site", "n-site")])
def test_a_site_name_becomes_a_key_file_stem(site, stem):
    assert key_name(site) == stem


def test_new_node_keys_show_the_public_keys_fingerprint(tmp_path):
    keys = make_node_keys(tmp_path, "CT-Hospital")
    assert (keys.private.name, keys.public.name) == ("CT-Hospital.key", "CT-Hospital.pub")
    assert keys.fingerprint == ssh_keygen_fingerprint(keys.public)
    assert keys.fingerprint == fingerprint(load_public_key(keys.public))
    assert keys.fingerprint == fingerprint(load_private_key(keys.private).public_key())
    assert keys.set_aside == ()
    assert read_node_keys(tmp_path, "CT-Hospital") == keys


def test_existing_node_keys_are_refused_then_set_aside_on_replace(tmp_path):
    old = make_node_keys(tmp_path, "site")
    old_private, old_public = old.private.read_bytes(), old.public.read_bytes()
    with pytest.raises(KeysExistError, match="site.key and site.pub already exist"):
        make_node_keys(tmp_path, "site")
    assert (old.private.read_bytes(), old.public.read_bytes()) == (old_private, old_public)

    new = make_node_keys(tmp_path, "site", replace=True)
    assert new.fingerprint != old.fingerprint and new.fingerprint == ssh_keygen_fingerprint(new.public)
    kept = {path.name.split(".replaced-")[0]: path for path in new.set_aside}
    assert set(kept) == {"site.key", "site.pub"}
    assert kept["site.key"].read_bytes() == old_private and kept["site.pub"].read_bytes() == old_public
    assert stat.S_IMODE(kept["site.key"].stat().st_mode) == 0o600  # still the owner's only
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(
        ["site.key", "site.pub", *(path.name for path in new.set_aside)])


def test_replacing_twice_keeps_every_earlier_pair(tmp_path):
    first = make_node_keys(tmp_path, "site").private.read_bytes()
    second = make_node_keys(tmp_path, "site", replace=True).private.read_bytes()
    third = make_node_keys(tmp_path, "site", replace=True)
    kept = sorted(path.read_bytes() for path in tmp_path.glob("site.key.replaced-*"))
    assert kept == sorted([first, second]) and third.private.read_bytes() not in kept


def test_half_a_pair_is_reported_not_guessed(tmp_path):
    keys = make_node_keys(tmp_path, "site")
    keys.private.unlink()
    with pytest.raises(ConfigError, match="site.key is missing"):
        read_node_keys(tmp_path, "site")
    assert read_node_keys(tmp_path / "empty", "site") is None


def test_a_public_key_of_another_pair_is_refused(tmp_path):
    keys = make_node_keys(tmp_path / "a", "site")
    other = make_node_keys(tmp_path / "b", "site")
    keys.public.write_bytes(other.public.read_bytes())
    with pytest.raises(ConfigError, match="site.pub is not the public half of site.key"):
        read_node_keys(tmp_path / "a", "site")


def test_he_keys_are_refused_then_replaced_and_their_fingerprint_is_the_files(tmp_path):
    keys = make_he_keys(tmp_path)
    assert (keys.private.name, keys.public.name) == ("secret.ctx", "public.ctx")
    assert keys.fingerprint == load_secret_context(keys.private).fingerprint
    assert keys.fingerprint == load_public_context(keys.public).fingerprint
    assert read_he_keys(tmp_path) == keys
    secret = keys.private.read_bytes()
    with pytest.raises(KeysExistError, match="secret.ctx and public.ctx already exist"):
        make_he_keys(tmp_path)
    assert keys.private.read_bytes() == secret
    new = make_he_keys(tmp_path, replace=True)
    assert new.fingerprint != keys.fingerprint
    kept = [path for path in new.set_aside if path.name.startswith("secret.ctx.replaced-")]
    assert len(kept) == 1 and kept[0].read_bytes() == secret


def test_export_copies_only_the_public_half_and_keeps_what_it_replaces(tmp_path):
    keys = make_node_keys(tmp_path / "keys", "site")
    first = keys.public.read_bytes()
    out = tmp_path / "for-operator"
    copied = export_public(keys, out)
    assert copied == out / "site.pub" and copied.read_bytes() == first
    assert [path.name for path in out.iterdir()] == ["site.pub"]
    assert stat.S_IMODE(copied.stat().st_mode) == 0o644

    newer = make_node_keys(tmp_path / "keys", "site", replace=True)
    with pytest.raises(KeysExistError, match="site.pub already exists"):
        export_public(newer, out)
    assert copied.read_bytes() == first
    export_public(newer, out, replace=True)
    assert copied.read_bytes() == newer.public.read_bytes()
    backups = list(out.glob("site.pub.backup-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == first
    assert export_public(newer, tmp_path / "keys") == newer.public  # its own folder: nothing to copy
