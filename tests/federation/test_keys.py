"""Node keys: in the format flwr 1.42's SuperNode and `flwr supernode register` read, never overwritten."""

import argparse
import stat

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from flwr.cli.supernode.register import try_load_public_key
from flwr.supercore.primitives.asymmetric import public_key_to_bytes
from flwr.supernode.cli.flower_supernode import _try_setup_client_authentication

from app.cli import main
from federation.keys import fingerprint, generate_node_keys, load_private_key, load_public_key
from segmentation.errors import ConfigError


def test_flower_reads_the_pair_and_both_halves_match(tmp_path):
    pair = generate_node_keys(tmp_path / "keys", "site-a")
    assert (pair.private_key.name, pair.public_key.name) == ("site-a.key", "site-a.pub")

    # What flower-supernode --auth-supernode-private-key does with the private key ...
    private_key, derived_public = _try_setup_client_authentication(
        argparse.Namespace(auth_supernode_private_key=str(pair.private_key), auth_supernode_public_key=None)
    )
    assert isinstance(private_key.curve, ec.SECP384R1)
    # ... and what `flwr supernode register site-a.pub` sends to the SuperLink: the same key.
    assert try_load_public_key(pair.public_key) == public_key_to_bytes(derived_public)
    assert pair.fingerprint == fingerprint(load_public_key(pair.public_key))
    assert pair.fingerprint.startswith("SHA256:") and len(pair.fingerprint) == 7 + 43


def test_the_private_key_is_readable_by_its_owner_only(tmp_path):
    pair = generate_node_keys(tmp_path)
    assert stat.S_IMODE(pair.private_key.stat().st_mode) == 0o600
    assert pair.public_key.read_text().startswith("ecdsa-sha2-nistp384 ")


def test_existing_keys_are_never_overwritten(tmp_path):
    pair = generate_node_keys(tmp_path, "site-a")
    before = pair.private_key.read_bytes()
    with pytest.raises(ConfigError, match="site-a.key already exists"):
        generate_node_keys(tmp_path, "site-a")
    assert pair.private_key.read_bytes() == before


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden", "x" * 65])
def test_key_names_cannot_be_paths(tmp_path, name):
    with pytest.raises(ConfigError, match="key name"):
        generate_node_keys(tmp_path, name)
    assert list(tmp_path.iterdir()) == []


def test_keys_flower_would_refuse_are_refused(tmp_path):
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    rsa_public = tmp_path / "rsa.pub"
    rsa_public.write_bytes(rsa_key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH))
    pem_private = tmp_path / "pem.key"
    pem_private.write_bytes(ec.generate_private_key(ec.SECP384R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    with pytest.raises(ConfigError, match="not an ECDSA public key"):
        load_public_key(rsa_public)
    with pytest.raises(ConfigError, match="not an unencrypted ECDSA private key"):
        load_private_key(pem_private)
    with pytest.raises(ConfigError, match="cannot read the public key"):
        load_public_key(tmp_path / "absent.pub")


def test_cli_makes_the_pair_and_prints_the_fingerprint(tmp_path, capsys):
    assert main(["keys", "node", "--out", str(tmp_path / "k"), "--name", "ct-site"]) == 0
    out = capsys.readouterr().out
    public = tmp_path / "k" / "ct-site.pub"
    assert f"public key:  {public}" in out
    assert f"fingerprint: {fingerprint(load_public_key(public))}" in out

    assert main(["keys", "node", "--out", str(tmp_path / "k"), "--name", "ct-site"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "already exists" in error


def test_cli_keys_needs_a_kind(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["keys"])
    assert exit_info.value.code == 2
    assert "KIND" in capsys.readouterr().err
