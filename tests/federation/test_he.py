"""Homomorphically encrypted aggregation (seeded secret-key BFV), without Flower processes.

What must hold: `fedseg keys he` writes a secret context (mode 0600) and a public one without any key,
both with the same fingerprint, never overwriting; the server's context can neither encrypt nor decrypt;
damaged, foreign or earlier-version context files are refused; parameters below 128-bit security are
refused; an upload is about 1.5 times the model's float32 bytes; the sites' encrypted FedAvg, masked or
not, equals NumPy's weighted mean within 1e-6 while one masked upload reveals nothing of its update; sites
refuse unsafe updates before encrypting; malformed ciphertexts and records are refused; the encrypted
checkpoint round-trips.

Expected values come from NumPy on the plaintext vectors or from Python integer arithmetic, never from
the code under test.
"""

import json
import re
import stat
from fractions import Fraction

import numpy as np
import pytest
import tomli_w
from site_data import PLAN, server_toml

from app.cli import main
from federation.config import load_server_config, load_site_config
from federation.he import aggregation
from federation.he.aggregation import (
    MAX_SUMMANDS,
    CiphertextError,
    EncryptedSum,
    UnsafeUpdate,
    UpdateLimits,
    add_checked,
    add_encrypted,
    check_chunks,
    check_update,
    check_weight,
    decrypt_average,
    decrypt_integers,
    encrypt_share,
    load_chunk,
)
from federation.he.checkpoint import EncryptedCheckpoint, load_encrypted_checkpoint, save_encrypted_checkpoint
from federation.he.context import (
    HeContextError,
    HeParameters,
    context_from_bytes,
    create_context,
    key_fingerprint,
    load_public_context,
    load_secret_context,
    write_he_keys,
)
from federation.he.packing import Layout, chunk_sizes, chunks
from federation.he.records import (
    chunks_from_arrays,
    chunks_to_arrays,
    from_arrays,
    is_encrypted,
    to_array_record,
    to_arrays,
)
from segmentation.errors import CheckpointError, ConfigError
from segmentation.settings import NetworkConfig

FRACTION_BITS = 24  # the default parameters' fixed-point fraction bits: a step of 2**-24


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """One federation's key files and the contexts the sites and the server load from them."""
    files = write_he_keys(tmp_path_factory.mktemp("he"))
    return files, load_secret_context(files.secret_context), load_public_context(files.public_context)


def decoded(record):
    return from_arrays({name: array.numpy() for name, array in record.items()})


def signed_python(value: int, modulus: int) -> int:
    """An integer modulo t read as signed, in (-t/2, t/2], with Python integers."""
    value %= modulus
    return value - modulus if value > modulus // 2 else value


# -- key files -----------------------------------------------------------------------------------------

def test_the_secret_context_is_private_and_the_public_one_holds_no_key(keys):
    files, secret, public = keys
    assert files.secret_context.name == "secret.ctx" and files.public_context.name == "public.ctx"
    assert stat.S_IMODE(files.secret_context.stat().st_mode) == 0o600
    assert secret.has_secret_key and secret.secret_key is not None
    assert not public.has_secret_key and public.secret_key is None
    assert secret.fingerprint == public.fingerprint == files.fingerprint
    assert len(files.fingerprint) == 19 and files.fingerprint.count("-") == 3
    secret_bytes, public_bytes = files.secret_context.read_bytes(), files.public_context.read_bytes()
    # The public file is the secret one without the key: the same header and parameters, nothing after.
    assert len(public_bytes) < len(secret_bytes) and secret_bytes.startswith(public_bytes)
    assert public.parameters == secret.parameters and public.plain_modulus == secret.plain_modulus


def test_the_public_context_can_neither_encrypt_nor_decrypt(keys):
    _, secret, public = keys
    vector = np.linspace(-1, 1, 3000)
    with pytest.raises(HeContextError, match="no secret key and cannot encrypt"):
        encrypt_share(public, vector, 1, 1)
    encrypted = encrypt_share(secret, vector, 1, 1)
    with pytest.raises(HeContextError, match="no secret key and cannot decrypt"):
        decrypt_integers(public, encrypted.chunks, vector.size)
    with pytest.raises(CiphertextError, match="no secret key"):
        decrypt_average(public, encrypted, vector.size)
    with pytest.raises(HeContextError):
        secret.public().encryptor  # noqa: B018  # the property is the check
    # ...while the secret context reads what it encrypted.
    average = decrypt_average(secret, encrypted, vector.size)
    np.testing.assert_allclose(average, vector, atol=2.0 ** -FRACTION_BITS)


def test_write_he_keys_never_overwrites(keys, tmp_path):
    files = keys[0]
    before = files.secret_context.read_bytes(), files.public_context.read_bytes()
    with pytest.raises(ConfigError, match="already exists"):
        write_he_keys(files.secret_context.parent)
    assert (files.secret_context.read_bytes(), files.public_context.read_bytes()) == before
    (tmp_path / "public.ctx").write_bytes(b"someone else's")
    with pytest.raises(ConfigError, match="public.ctx already exists"):
        write_he_keys(tmp_path)
    assert not (tmp_path / "secret.ctx").exists()
    assert (tmp_path / "public.ctx").read_bytes() == b"someone else's"


def test_each_side_refuses_the_other_sides_context(keys):
    files, _, _ = keys
    with pytest.raises(HeContextError, match="holds a secret key, which the server must never have"):
        load_public_context(files.secret_context)
    with pytest.raises(HeContextError, match="holds no secret key"):
        load_secret_context(files.public_context)


def test_a_ckks_context_of_an_earlier_version_is_refused_as_such(tmp_path, keys):
    path = tmp_path / "old.ctx"
    path.write_bytes(b"fedseg-he-context/1\n0000-0000-0000-0000\n" + bytes(range(256)) * 8)
    for load in (load_public_context, load_secret_context):
        with pytest.raises(HeContextError, match="earlier FedSeg version") as refused:
            load(path)
        assert "new keys" in str(refused.value) and "\n" not in str(refused.value)


def test_unusable_context_files_are_refused(tmp_path, keys):
    files = keys[0]
    (tmp_path / "junk.ctx").write_bytes(b"not a context")
    with pytest.raises(HeContextError, match="not a FedSeg HE context"):
        load_public_context(tmp_path / "junk.ctx")
    relabelled = files.secret_context.read_bytes().replace(files.fingerprint.encode(), b"0000-0000-0000-0000")
    (tmp_path / "relabelled.ctx").write_bytes(relabelled)
    with pytest.raises(HeContextError, match="damaged: its secret key does not have the fingerprint"):
        load_secret_context(tmp_path / "relabelled.ctx")
    with pytest.raises(HeContextError, match="cannot read"):
        load_secret_context(tmp_path / "absent.ctx")


@pytest.mark.parametrize("where", [0.1, 0.5, 0.9])
def test_a_context_with_flipped_bytes_in_its_key_is_refused(tmp_path, keys, where):
    files = keys[0]
    data = bytearray(files.secret_context.read_bytes())
    key_start = len(files.public_context.read_bytes())  # the key follows the public part
    position = key_start + int((len(data) - key_start) * where)
    for offset in range(4):
        data[position + offset] ^= 0xA5
    (tmp_path / "flipped.ctx").write_bytes(bytes(data))
    with pytest.raises(HeContextError, match="damaged"):
        load_secret_context(tmp_path / "flipped.ctx")


def test_a_context_with_flipped_bytes_in_its_parameters_is_refused(tmp_path, keys):
    files = keys[0]
    data = bytearray(files.public_context.read_bytes())
    data[-10] ^= 0xFF
    (tmp_path / "flipped.ctx").write_bytes(bytes(data))
    with pytest.raises(HeContextError, match="damaged"):
        load_public_context(tmp_path / "flipped.ctx")


@pytest.mark.parametrize("keep", [-1, -200, 0.5, 40])
def test_a_truncated_context_is_refused(tmp_path, keys, keep):
    """Cut in the key, in the parameters, or in the header."""
    data = keys[0].secret_context.read_bytes()
    length = int(len(data) * keep) if isinstance(keep, float) else keep
    (tmp_path / "cut.ctx").write_bytes(data[:length])
    with pytest.raises(HeContextError):
        load_secret_context(tmp_path / "cut.ctx")


def test_the_fingerprint_is_stable_across_save_and_load_and_names_the_key(keys):
    files, secret, public = keys
    assert key_fingerprint(secret.parameters, secret.secret_key) == files.fingerprint
    context = create_context()
    again = context_from_bytes(context.file_bytes(), "memory")
    assert again.fingerprint == context.fingerprint == key_fingerprint(again.parameters, again.secret_key)
    assert context_from_bytes(context.public().file_bytes(), "memory").fingerprint == context.fingerprint
    assert context.fingerprint != files.fingerprint != create_context().fingerprint
    # The loaded key is the key: what one encrypts, the other decrypts exactly.
    vector = np.random.default_rng(1).normal(0, 0.5, 2500)
    integers = decrypt_integers(again, encrypt_share(context, vector, 1, 1).chunks, vector.size)
    assert integers.tolist() == [round(Fraction(float(x)) * 2**FRACTION_BITS) for x in vector]
    # ...and another key does not.
    other = decrypt_integers(create_context(), encrypt_share(context, vector, 1, 1).chunks, vector.size)
    assert not np.array_equal(other, integers)


def test_keys_he_command_prints_the_fingerprint(tmp_path, capsys):
    assert main(["keys", "he", "--out", str(tmp_path / "he")]) == 0
    output = capsys.readouterr().out
    fingerprint = load_public_context(tmp_path / "he" / "public.ctx").fingerprint
    assert f"fingerprint:    {fingerprint}" in output and "secret.ctx" in output
    assert main(["keys", "he", "--out", str(tmp_path / "he")]) == 2
    assert "already exists" in capsys.readouterr().err


# -- parameters ----------------------------------------------------------------------------------------

def test_parameters_below_128_bit_security_are_refused():
    with pytest.raises(ConfigError, match="128-bit security"):
        create_context(HeParameters(2048, 60, 29))  # 60 coefficient bits > the 54 that N=2048 allows
    larger = create_context(HeParameters(4096, 60, 29))  # ...which N=4096 carries
    assert larger.slots == 4096


@pytest.mark.parametrize("arguments", [
    (1000, 40, 29), (512, 40, 29), (3072, 40, 29),  # degree not a power of two >= 1024
    (2048, 40, 16),  # plaintext modulus too small
    (2048, 40, 40), (2048, 30, 31),  # plaintext modulus not below the coefficient modulus
    (2048, 61, 29),  # coefficient prime above 60 bits
    (2048, 40, 29, 0), (2048, 40, 29, -3), (2048, 40, 29, 27),  # fraction bits outside 1..t_bits - 3
])
def test_invalid_parameters_raise_value_error(arguments):
    with pytest.raises(ValueError):
        HeParameters(*arguments)


def test_the_default_context_has_the_documented_code():
    context = create_context()
    assert context.slots == 2048
    assert context.step == 2.0 ** -FRACTION_BITS
    assert context.plain_modulus.bit_length() == 29 and context.plain_modulus % (2 * 2048) == 1  # batching
    assert all(context.plain_modulus % p for p in range(2, 30000))  # a prime (no factor below its root)
    assert context.capacity == (context.plain_modulus // 4) / 2**FRACTION_BITS


# -- sizes ---------------------------------------------------------------------------------------------

def test_an_upload_and_the_servers_sum_are_small(keys):
    _, secret, public = keys
    size = 100_000
    rng = np.random.default_rng(2)
    uploads = [encrypt_share(secret, rng.normal(0, 0.5, size), 1, 3) for _ in range(3)]
    float32_bytes = 4 * size
    assert len(uploads[0].chunks) == -(-size // 2048)
    assert all(upload.nbytes <= 1.6 * float32_bytes for upload in uploads)
    total = add_encrypted(public, uploads, size)
    assert total.nbytes <= 3.1 * float32_bytes
    assert (total.weight, total.total) == (3, 3)


# -- precision and masking -----------------------------------------------------------------------------

def zero_sum_masks(count: int, size: int, modulus: int, rng: np.random.Generator) -> list[np.ndarray]:
    """`count` uniform uint64 vectors modulo t whose sum is 0 modulo t."""
    masks = [rng.integers(0, modulus, size, dtype=np.uint64) for _ in range(count - 1)]
    partial = np.sum(masks, axis=0, dtype=np.uint64) % np.uint64(modulus)  # < 20 * 2**29: no overflow
    masks.append((np.uint64(modulus) - partial) % np.uint64(modulus))
    return masks


@pytest.fixture(scope="module")
def twenty_sites():
    """20 sites' updates (normal, sd 0.5) and example counts."""
    rng = np.random.default_rng(3)
    size = 20_000
    updates = rng.normal(0, 0.5, (20, size))
    counts = [int(count) for count in rng.integers(1, 500, 20)]
    return updates, counts


@pytest.mark.parametrize("masked", [False, True], ids=["plain", "masked"])
def test_encrypted_fedavg_of_20_sites_equals_numpy(keys, twenty_sites, masked):
    _, secret, public = keys
    updates, counts = twenty_sites
    size, total = updates.shape[1], sum(counts)
    masks = (zero_sum_masks(20, size, secret.plain_modulus, np.random.default_rng(4)) if masked
             else [None] * 20)
    if masked:
        column = [int(mask[7]) for mask in masks]
        assert sum(column) % secret.plain_modulus == 0 and any(column)
    shares = [encrypt_share(secret, update, count, total, mask)
              for update, count, mask in zip(updates, counts, masks, strict=True)]
    summed = add_encrypted(public, shares, size)
    assert (summed.weight, summed.total) == (total, total)
    average = decrypt_average(secret, summed, size)
    expected = np.average(updates, axis=0, weights=counts)
    assert average.shape == (size,)
    assert float(np.max(np.abs(average - expected))) <= 1e-6


def test_the_sum_of_the_sites_that_answered_is_their_weighted_mean(keys, twenty_sites):
    """Sites that dropped: the survivors' sum divides by their own examples, not the round's."""
    _, secret, public = keys
    updates, counts = twenty_sites
    total, survivors = sum(counts), [0, 3, 4, 9, 10, 15, 19]
    shares = [encrypt_share(secret, updates[k], counts[k], total) for k in survivors]
    summed = add_encrypted(public, shares, updates.shape[1])
    assert (summed.weight, summed.total) == (sum(counts[k] for k in survivors), total)
    expected = np.average(updates[survivors], axis=0, weights=[counts[k] for k in survivors])
    assert float(np.max(np.abs(decrypt_average(secret, summed, updates.shape[1]) - expected))) <= 1e-6


def test_one_masked_upload_is_uncorrelated_with_its_update(keys):
    _, secret, _ = keys
    size = 100_000
    rng = np.random.default_rng(5)
    update = rng.normal(0, 0.5, size)
    mask = zero_sum_masks(3, size, secret.plain_modulus, rng)[0]
    seen = decrypt_integers(secret, encrypt_share(secret, update, 40, 100, mask).chunks, size)
    assert abs(float(np.corrcoef(seen.astype(np.float64), update)[0, 1])) < 0.01
    # The test can tell: without the mask the same upload is the update, scaled.
    clear = decrypt_integers(secret, encrypt_share(secret, update, 40, 100).chunks, size)
    assert float(np.corrcoef(clear.astype(np.float64), update)[0, 1]) > 0.999


# -- quantisation --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("weight", "total"), [(1, 1), (3, 7), (250, 251)])
def test_the_encrypted_integers_are_the_rounded_fixed_point_share(keys, weight, total):
    _, secret, _ = keys
    step_count = 2**FRACTION_BITS
    capacity = (secret.plain_modulus // 4) / step_count
    rng = np.random.default_rng(weight)
    vector = np.concatenate([
        rng.normal(0, 0.5, 4000),
        [0.0, -0.0, -1.0, 1.0, -3 / step_count, 5 / step_count, -capacity, capacity, -7.5, 7.25],
    ])
    integers = decrypt_integers(secret, encrypt_share(secret, vector, weight, total).chunks, vector.size)
    assert integers.dtype == np.int64
    expected = [round(Fraction(float(x)) * weight / total * step_count) for x in vector]
    assert integers.tolist() == expected
    assert (integers < 0).sum() > 1000  # negative values came back negative


def test_decrypted_integers_are_signed_modulo_t(keys):
    """A value modulo t above t/2 is a negative one; a sum that passes t wraps (which capacity prevents)."""
    _, secret, public = keys
    t = secret.plain_modulus
    vector = np.array([1.0, -1.0, 2.0, -2.0])
    shares = [encrypt_share(secret, vector, 1, 1)] * 3
    integers = decrypt_integers(secret, add_encrypted(public, shares, 4).chunks, 4)
    assert integers.tolist() == [signed_python(3 * int(round(x * 2**FRACTION_BITS)), t) for x in vector]
    assert integers.tolist() == [3 * 2**24, -3 * 2**24, 6 * 2**24, -6 * 2**24]


# -- the site's checks before encrypting ---------------------------------------------------------------

def test_a_site_refuses_to_encrypt_an_unsafe_update(keys):
    capacity = keys[1].capacity
    reference = np.full(10, 0.5)
    check_update(reference + 0.1, reference, capacity)  # a sane update passes
    check_update(np.where(np.arange(10) == 0, -capacity, reference), reference, capacity)  # the edge too
    with pytest.raises(UnsafeUpdate, match="1 NaN or Inf"):
        check_update(np.where(np.arange(10) == 3, np.nan, reference), reference, capacity)
    with pytest.raises(UnsafeUpdate, match="2 NaN or Inf"):
        check_update(np.where(np.arange(10) < 2, -np.inf, reference), reference, capacity)
    with pytest.raises(UnsafeUpdate, match="diverged"):
        check_update(np.full(10_000, 3.0), np.zeros(10_000), capacity)  # norm 300 > 100 x 1
    with pytest.raises(UnsafeUpdate, match="diverged"):
        check_update(reference + 1.0, reference, capacity, UpdateLimits(max_relative_norm=1.0))
    with pytest.raises(UnsafeUpdate, match="exceeds what encrypted aggregation can add up"):
        check_update(np.where(np.arange(10) == 4, capacity * 1.01, reference), reference, capacity)
    with pytest.raises(UnsafeUpdate, match="exceeds"):
        check_update(np.where(np.arange(10) == 4, -capacity - 0.5, reference), reference, capacity)
    with pytest.raises(UnsafeUpdate, match="the update has 9 values, the global model 10"):
        check_update(reference[:9], reference, capacity)
    with pytest.raises(ValueError):
        UpdateLimits(max_relative_norm=0)


def test_a_site_refuses_a_weight_that_is_not_a_share_of_the_round():
    check_weight(1, 1)
    check_weight(np.int64(3), 10)
    for weight, total in ((True, 5), (3, True), (0, 5), (-1, 5), (2.0, 5), ("2", 5), (3, 0)):
        with pytest.raises(UnsafeUpdate, match="positive integer"):
            check_weight(weight, total)
    with pytest.raises(UnsafeUpdate, match="6 examples are more than the round's 5"):
        check_weight(6, 5)


# -- ciphertext checks ---------------------------------------------------------------------------------

def test_garbage_or_foreign_ciphertexts_are_refused(keys):
    _, secret, public = keys
    with pytest.raises(CiphertextError):
        load_chunk(public, b"garbage")
    chunk = encrypt_share(secret, np.linspace(-1, 1, 100), 1, 1).chunks[0]
    load_chunk(public, chunk)  # the genuine one loads
    with pytest.raises(CiphertextError):
        load_chunk(public, chunk[: len(chunk) // 2])
    foreign = create_context(HeParameters(4096, 60, 29))
    with pytest.raises(CiphertextError):
        load_chunk(public, encrypt_share(foreign, np.linspace(-1, 1, 100), 1, 1).chunks[0])


def test_a_wrong_number_of_chunks_is_refused(keys):
    _, secret, public = keys
    encrypted = encrypt_share(secret, np.linspace(-1, 1, 3000), 1, 1)  # two chunks
    assert len(check_chunks(public, encrypted.chunks, 3000)) == 2
    for size in (2048, 5000):
        needed = len(chunk_sizes(size, 2048))
        with pytest.raises(CiphertextError, match=f"2 chunks, the model needs {needed}"):
            check_chunks(public, encrypted.chunks, size)


def test_a_sum_of_too_many_ciphertexts_is_refused(keys, monkeypatch):
    _, secret, public = keys
    assert MAX_SUMMANDS >= 20  # the precision test's 20 sites fit in one sum
    monkeypatch.setattr(aggregation, "MAX_SUMMANDS", 2)
    share = encrypt_share(secret, np.linspace(-1, 1, 100), 1, 3)
    add_checked(public, [check_chunks(public, share.chunks, 100) for _ in range(2)], 2, 3)
    with pytest.raises(CiphertextError, match="3 ciphertexts in one sum; at most 2"):
        add_checked(public, [check_chunks(public, share.chunks, 100) for _ in range(3)], 3, 3)


def test_decrypting_needs_the_key_and_a_weight_within_the_total(keys):
    _, secret, public = keys
    vector = np.linspace(-1, 1, 100)
    encrypted = encrypt_share(secret, vector, 5, 5)
    with pytest.raises(CiphertextError, match="no secret key"):
        decrypt_average(public, encrypted, 100)
    with pytest.raises(CiphertextError, match="more than the round's"):
        decrypt_average(secret, EncryptedSum(encrypted.chunks, 8, 5), 100)
    with pytest.raises(CiphertextError, match="positive integer"):
        decrypt_average(secret, EncryptedSum(encrypted.chunks, 0, 5), 100)


def test_sums_of_different_rounds_are_not_added(keys):
    _, secret, public = keys
    vector = np.linspace(-1, 1, 100)
    with pytest.raises(CiphertextError, match=re.escape("different totals [10, 11]")):
        add_encrypted(public, [encrypt_share(secret, vector, 2, 10), encrypt_share(secret, vector, 2, 11)],
                      100)
    with pytest.raises(CiphertextError, match="more than the round's"):
        add_encrypted(public, [EncryptedSum(encrypt_share(secret, vector, 2, 10).chunks, 12, 10)], 100)


# -- records -------------------------------------------------------------------------------------------

def test_an_encrypted_sum_travels_as_four_arrays_and_round_trips(keys):
    _, secret, _ = keys
    encrypted = encrypt_share(secret, np.linspace(-1, 1, 3000), 7, 20)  # two ciphertexts
    arrays = to_arrays(encrypted)
    assert {name: (array.dtype, array.shape) for name, array in arrays.items()} == {
        "he/weight": (np.int64, ()), "he/total": (np.int64, ()), "he/sizes": (np.int64, (2,)),
        "he/data": (np.uint8, (encrypted.nbytes,))}
    assert (int(arrays["he/weight"]), int(arrays["he/total"])) == (7, 20)
    assert arrays["he/sizes"].tolist() == [len(chunk) for chunk in encrypted.chunks]
    assert arrays["he/data"].tobytes() == b"".join(encrypted.chunks)
    assert is_encrypted(arrays) and not is_encrypted({"w": np.zeros(3)})
    assert from_arrays(arrays) == encrypted
    assert decoded(to_array_record(encrypted)) == encrypted  # through Flower's serialization too


def test_chunks_travel_as_two_arrays_and_round_trip():
    pieces = (b"abc", b"\x00" * 7, b"z")
    arrays = chunks_to_arrays(pieces)
    assert set(arrays) == {"he/sizes", "he/data"}
    assert arrays["he/sizes"].tolist() == [3, 7, 1] and arrays["he/data"].size == 11
    assert chunks_from_arrays(arrays) == pieces
    with pytest.raises(CiphertextError, match="unexpected array 'he/weight'"):
        chunks_from_arrays({**arrays, "he/weight": np.array(1)})
    with pytest.raises(CiphertextError, match="no 'he/data' array"):
        chunks_from_arrays({"he/sizes": arrays["he/sizes"]})
    with pytest.raises(CiphertextError, match="add up to 11 bytes, but 'he/data' holds 10"):
        chunks_from_arrays({"he/sizes": arrays["he/sizes"], "he/data": arrays["he/data"][:10]})


def malformed(change: dict[str, np.ndarray | None]) -> dict[str, np.ndarray]:
    """Two ciphertexts of 3 and 2 bytes, with some arrays replaced (or removed when None)."""
    arrays = to_arrays(EncryptedSum((b"abc", b"de"), 4, 9))
    arrays.update(change)
    return {name: array for name, array in arrays.items() if array is not None}


@pytest.mark.parametrize(("change", "reason"), [
    ({"he/sizes": None}, "no 'he/sizes' array"),
    ({"he/weight": None}, "no 'he/weight' array"),
    ({"he/total": None}, "no 'he/total' array"),
    ({"he/data": None}, "no 'he/data' array"),
    ({"he/00000": np.zeros(3, np.uint8)}, "unexpected array 'he/00000'"),
    ({"he/weight": np.array([4])}, "'he/weight' must be a scalar int64 array, got a 1-D int64 one"),
    ({"he/total": np.array(9.0)}, "'he/total' must be a scalar int64 array, got a 0-D float64 one"),
    ({"he/sizes": np.array([3.0, 2.0])}, "'he/sizes' must be a 1-D int64 array, got a 1-D float64 one"),
    ({"he/sizes": np.array([[3, 2]])}, "'he/sizes' must be a 1-D int64 array, got a 2-D int64 one"),
    ({"he/data": np.zeros(5, np.int8)}, "'he/data' must be a 1-D uint8 array, got a 1-D int8 one"),
    ({"he/data": np.zeros((1, 5), np.uint8)}, "'he/data' must be a 1-D uint8 array, got a 2-D uint8 one"),
    ({"he/sizes": np.array([5, 0])}, "ciphertext 1 has size 0; sizes must be positive"),
    ({"he/sizes": np.array([-1, 6])}, "ciphertext 0 has size -1"),
    ({"he/sizes": np.array([3, 3])}, "the ciphertext sizes add up to 6 bytes, but 'he/data' holds 5"),
    ({"he/sizes": np.array([2**62] * 4 + [5])}, "add up to 18446744073709551621 bytes"),  # int64 would wrap
    ({"he/sizes": np.zeros(0, np.int64), "he/data": np.zeros(0, np.uint8)}, "no ciphertexts"),
])
def test_malformed_encrypted_arrays_are_refused_with_a_reason(change, reason):
    with pytest.raises(CiphertextError, match=re.escape(reason)) as refused:
        from_arrays(malformed(change))
    assert "\n" not in str(refused.value)


# -- packing -------------------------------------------------------------------------------------------

def test_layout_round_trips_floats_and_integer_buffers():
    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3) / 7, "steps": np.array(12, dtype=np.int64)}
    layout = Layout.of(arrays)
    vector = layout.flatten(arrays)
    assert vector.shape == (7,) and layout.size == 7
    back = layout.unflatten(vector + 0.2)
    assert back["steps"].dtype == np.int64 and int(back["steps"]) == 12
    np.testing.assert_allclose(back["w"], arrays["w"] + 0.2, atol=1e-6)
    with pytest.raises(ValueError, match="do not match the layout"):
        layout.flatten({"w": arrays["w"], "x": arrays["steps"]})
    with pytest.raises(ValueError, match="shape"):
        layout.flatten({"w": arrays["w"].T, "steps": arrays["steps"]})


def test_chunks_cover_any_size():
    assert chunk_sizes(5000, 2048) == [2048, 2048, 904] and chunk_sizes(4096, 2048) == [2048, 2048]
    assert [len(piece) for piece in chunks(np.arange(5000.0), 2048)] == [2048, 2048, 904]


# -- the encrypted checkpoint --------------------------------------------------------------------------

def test_the_encrypted_checkpoint_round_trips_with_its_plan(keys, tmp_path):
    _, secret, _ = keys
    vector = np.linspace(0, 1, 3000)
    arrays = to_arrays(encrypt_share(secret, vector, 3, 5))
    checkpoint = EncryptedCheckpoint(NetworkConfig(channels=(8, 16)), PLAN, "none", 4, secret.fingerprint,
                                     arrays)
    save_encrypted_checkpoint(checkpoint, tmp_path / "model.he")
    loaded = load_encrypted_checkpoint(tmp_path / "model.he")
    assert (loaded.round, loaded.fingerprint, loaded.plan, loaded.labels) == (
        4, secret.fingerprint, PLAN, PLAN.labels)
    assert list(loaded.arrays) == list(arrays)
    assert all(np.array_equal(loaded.arrays[name], arrays[name]) for name in arrays)
    assert all(loaded.arrays[name].dtype == arrays[name].dtype for name in arrays)
    stored = from_arrays(loaded.arrays)
    assert (stored.weight, stored.total) == (3, 5)
    np.testing.assert_allclose(decrypt_average(secret, stored, vector.size), vector, atol=1e-6)
    (tmp_path / "bad.he").write_bytes(b"PK\x03\x04 damaged")
    with pytest.raises(CheckpointError, match="not a readable encrypted model"):
        load_encrypted_checkpoint(tmp_path / "bad.he")


def test_an_encrypted_checkpoint_without_a_plan_is_refused_in_one_line(tmp_path):
    header = json.dumps({"format": "fedseg-encrypted-model/2", "round": 3, "names": []})
    with open(tmp_path / "model.he", "wb") as stream:
        np.savez(stream, header=np.array(header))
    with pytest.raises(CheckpointError) as error:
        load_encrypted_checkpoint(tmp_path / "model.he")
    assert str(error.value) == (f"{tmp_path / 'model.he'} was made by an earlier version (format "
                                "fedseg-encrypted-model/2) and cannot be resumed; start the run again in "
                                "another [server] run_dir")


# -- settings ------------------------------------------------------------------------------------------

def he_server_toml(folder, public_context):
    path = folder / "server.toml"
    path.write_text(server_toml("run") + f'[he]\nenabled = true\npublic_context = "{public_context}"\n')
    return path


def test_server_toml_refuses_a_secret_context(keys, tmp_path):
    files = keys[0]
    with pytest.raises(ConfigError, match=r"\[he\] public_context is not usable: .* holds a secret key"):
        load_server_config(he_server_toml(tmp_path, files.secret_context))
    (tmp_path / "server.toml").write_text(server_toml("run") + tomli_w.dumps({"he": files.server_table()}))
    config = load_server_config(tmp_path / "server.toml")
    assert (config.he.enabled, config.he.fingerprint) == (True, files.fingerprint)


def test_site_toml_needs_the_secret_context_when_it_encrypts(keys, tmp_path):
    files = keys[0]
    (tmp_path / "data").mkdir()
    site = ('[site]\nname = "A"\nmodality = "ct"\ndata_dir = "data"\n[server]\naddress = "127.0.0.1:9092"\n'
            '[tls]\nenabled = false\n[he]\nenabled = true\n')
    (tmp_path / "site.toml").write_text(site)
    with pytest.raises(ConfigError, match=r"\[he\] secret_context is required when enabled = true"):
        load_site_config(tmp_path / "site.toml")
    (tmp_path / "site.toml").write_text(site + f'secret_context = "{files.public_context}"\n')
    with pytest.raises(ConfigError, match="holds no secret key"):
        load_site_config(tmp_path / "site.toml")
    (tmp_path / "site.toml").write_text(site.replace("[he]\nenabled = true\n",
                                                     tomli_w.dumps({"he": files.site_table()})))
    config = load_site_config(tmp_path / "site.toml")
    assert (config.he_secret_context, config.he_fingerprint) == (files.secret_context, files.fingerprint)
