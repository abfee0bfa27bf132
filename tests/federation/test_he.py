"""Homomorphically encrypted aggregation, without Flower processes.

What must hold: `fedseg keys he` writes a secret context (mode 0600) and a public one without the secret
key, both with the same fingerprint; the server refuses a secret context and cannot decrypt what it
adds; sites refuse unsafe updates before encrypting; a round of encrypted FedAvg equals plaintext FedAvg
within 1e-6 for 2D and 3D networks; malformed or foreign-key replies are dropped with a reason; the
encrypted checkpoint round-trips.
"""

import json
import math
import re
import shutil
import stat
from pathlib import Path

import numpy as np
import pytest
import tomli_w
from fed_replies import FakeGrid
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords
from flwr.supercore.task_identity import TaskIdentity
from site_data import PLAN, server_toml, write_disk_site
from test_server_app import LocalGrid

from app.cli import main
from federation.config import FederationSettings, load_server_config, load_site_config
from federation.he.aggregation import (
    CiphertextError,
    EncryptedSum,
    UnsafeUpdate,
    check_update,
    decrypt_average,
    encrypt_weighted,
)
from federation.he.checkpoint import (
    ENCRYPTED_CHECKPOINT_NAME,
    EncryptedCheckpoint,
    load_encrypted_checkpoint,
    save_encrypted_checkpoint,
)
from federation.he.context import (
    CkksParameters,
    HeContextError,
    create_context,
    load_public_context,
    load_secret_context,
    write_he_keys,
)
from federation.he.packing import Layout, chunk_sizes, chunks
from federation.he.records import (
    FINGERPRINT_KEY,
    HE_KEY_MISMATCH,
    MAX_MAGNITUDE_KEY,
    EncryptedAggregation,
    from_arrays,
    is_encrypted,
    to_array_record,
    to_arrays,
)
from federation.server_run import METRICS_NAME, model_of, read_metrics, run_server
from federation.strategy import build_strategy
from federation.task import SiteSettings, named_weights
from federation.validation import ACCEPTED, MALFORMED, ValidationLimits
from segmentation.algorithm import SegmentationAlgorithm
from segmentation.case_cache import CACHE_DIR_ENVIRONMENT
from segmentation.checkpoint import load_checkpoint
from segmentation.errors import CheckpointError, ConfigError
from segmentation.events import read_events
from segmentation.settings import GLOBAL_MODEL_NAME, NetworkConfig

pytestmark = pytest.mark.usefixtures("case_cache")  # conftest: each test its own case cache

LIMITS = ValidationLimits()


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    """One federation's key files and the contexts the sites and the server load from them."""
    files = write_he_keys(tmp_path_factory.mktemp("he"))
    return files, load_secret_context(files.secret_context), load_public_context(files.public_context)


def network_arrays(network: NetworkConfig, seed: int) -> dict[str, np.ndarray]:
    import torch

    torch.manual_seed(seed)
    return {name: tensor.numpy().copy() for name, tensor in network.build().state_dict().items()}


def site_reply(secret, arrays: dict[str, np.ndarray], examples: int) -> RecordDict:
    """What a site with HE sends: the pre-weighted encrypted update, its count and its key's fingerprint."""
    encrypted = encrypt_weighted(secret, Layout.of(arrays).flatten(arrays), examples)
    return RecordDict({
        "arrays": to_array_record(encrypted), "metrics": MetricRecord({"num-examples": examples}),
        "site": ConfigRecord({"site-name": "Site", FINGERPRINT_KEY: secret.fingerprint}),
    })


def decoded(record: ArrayRecord):
    return from_arrays({name: array.numpy() for name, array in record.items()})


# -- keys ------------------------------------------------------------------------------------------

def test_the_secret_context_is_private_and_the_public_one_has_no_secret_key(keys):
    files, secret, public = keys
    assert stat.S_IMODE(files.secret_context.stat().st_mode) == 0o600
    assert secret.has_secret_key and not public.has_secret_key
    assert secret.fingerprint == public.fingerprint == files.fingerprint
    assert len(files.fingerprint) == 19 and files.fingerprint.count("-") == 3
    assert files.public_context.stat().st_size < files.secret_context.stat().st_size


def test_each_side_refuses_the_other_sides_context(keys):
    files, _, _ = keys
    with pytest.raises(HeContextError, match="holds a secret key, which the server must never have"):
        load_public_context(files.secret_context)
    with pytest.raises(HeContextError, match="holds no secret key"):
        load_secret_context(files.public_context)


def test_unusable_context_files_are_typed_errors(tmp_path, keys):
    (tmp_path / "junk.ctx").write_bytes(b"not a context")
    with pytest.raises(HeContextError, match="not a FedSeg HE context"):
        load_public_context(tmp_path / "junk.ctx")
    (tmp_path / "junk.ctx").write_bytes(b"fedseg-he-context/1\n0000-0000-0000-0000\ngarbage")
    with pytest.raises(HeContextError, match="not a TenSEAL CKKS context"):
        load_public_context(tmp_path / "junk.ctx")
    files = keys[0]
    relabelled = files.secret_context.read_bytes().replace(files.fingerprint.encode(), b"0000-0000-0000-0000")
    (tmp_path / "relabelled.ctx").write_bytes(relabelled)
    with pytest.raises(HeContextError, match="damaged"):
        load_secret_context(tmp_path / "relabelled.ctx")
    with pytest.raises(HeContextError, match="cannot read"):
        load_secret_context(tmp_path / "absent.ctx")
    with pytest.raises(ConfigError, match="already exists"):
        write_he_keys(keys[0].secret_context.parent)


def test_another_key_has_another_fingerprint(tmp_path, keys):
    assert create_context().fingerprint != keys[0].fingerprint


def test_parameters_below_128_bit_security_are_refused():
    with pytest.raises(ConfigError, match="128-bit security"):
        create_context(CkksParameters(4096, (60, 60), 40))  # 120 bits > the 109 that N=4096 allows


def test_keys_he_command_prints_the_fingerprint(tmp_path, capsys):
    assert main(["keys", "he", "--out", str(tmp_path / "he")]) == 0
    output = capsys.readouterr().out
    fingerprint = load_public_context(tmp_path / "he" / "public.ctx").fingerprint
    assert f"fingerprint:    {fingerprint}" in output and "secret.ctx" in output
    assert main(["keys", "he", "--out", str(tmp_path / "he")]) == 2
    assert "already exists" in capsys.readouterr().err


# -- packing ---------------------------------------------------------------------------------------

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


# -- the site's check before encrypting -------------------------------------------------------------

def test_a_site_refuses_to_encrypt_an_unsafe_update():
    reference = np.full(10, 0.5)
    check_update(reference + 0.1, reference, 100, max_magnitude=100.0)
    with pytest.raises(UnsafeUpdate, match="NaN or Inf"):
        check_update(np.where(np.arange(10) == 3, np.nan, reference), reference, 100, 100.0)
    with pytest.raises(UnsafeUpdate, match="diverged"):
        check_update(reference + 1e4, reference, 1, math.inf)
    with pytest.raises(UnsafeUpdate, match="share .* of the ciphertext capacity"):
        check_update(reference, reference, 1000, max_magnitude=100.0)
    with pytest.raises(UnsafeUpdate, match="positive integer"):
        check_update(reference, reference, 0, 100.0)


# -- one encrypted round -----------------------------------------------------------------------------

@pytest.mark.parametrize("network", [NetworkConfig(channels=(8, 16, 32)),
                                     NetworkConfig(spatial_dims=3, channels=(4, 8))], ids=["2d", "3d"])
def test_an_encrypted_round_equals_plaintext_fedavg(keys, network):
    _, secret, public = keys
    global_model = network_arrays(network, seed=0)
    counts = (1, 37, 384)
    updates = [{name: value + np.random.default_rng(seed).normal(0, 0.05, value.shape).astype(value.dtype)
                for name, value in global_model.items()} for seed in range(len(counts))]
    layout = Layout.of(global_model)
    replies = [site_reply(secret, update, count) for update, count in zip(updates, counts, strict=True)]

    server = EncryptedAggregation(public, layout.size)
    assert [server.validate_reply(reply, LIMITS, "num-examples").code for reply in replies] == [ACCEPTED] * 3
    aggregate = decoded(server.aggregate(replies))
    assert aggregate.weight == sum(counts)
    average = layout.unflatten(decrypt_average(secret, aggregate, layout.size))

    plaintext = [RecordDict({"arrays": ArrayRecord({n: Array(v) for n, v in update.items()}),
                             "metrics": MetricRecord({"num-examples": count})})
                 for update, count in zip(updates, counts, strict=True)]
    fedavg = aggregate_arrayrecords(plaintext, "num-examples")
    error = max(float(np.max(np.abs(average[name] - fedavg[name].numpy()))) for name in layout.names)
    assert error <= 1e-6
    assert all(average[name].dtype == global_model[name].dtype for name in layout.names)


def test_the_server_holds_no_secret_key_and_cannot_decrypt_what_it_adds(keys):
    _, secret, public = keys
    arrays = {"w": np.linspace(-1, 1, 3000)}
    server = EncryptedAggregation(public, 3000)
    aggregate = decoded(server.aggregate([site_reply(secret, arrays, 5)]))
    assert not server.context.has_secret_key and not server.context.tenseal.is_private()
    with pytest.raises(CiphertextError, match="no secret key"):
        decrypt_average(server.context, aggregate, 3000)
    import tenseal as ts

    with pytest.raises(ValueError, match="secret_key"):
        ts.ckks_vector_from(public.tenseal, aggregate.chunks[0]).decrypt()
    with pytest.raises(ValueError, match="doesn't support encryption"):  # nor can it forge a model
        ts.ckks_vector(public.tenseal, [1.0])
    with pytest.raises(HeContextError, match="secret key"):
        EncryptedAggregation(secret, 3000)
    np.testing.assert_allclose(decrypt_average(secret, aggregate, 3000), arrays["w"], atol=1e-6)


def test_an_encrypted_sum_travels_as_three_arrays_and_round_trips(keys):
    _, secret, _ = keys
    encrypted = encrypt_weighted(secret, np.linspace(-1, 1, 3000), 7)  # two ciphertexts
    arrays = to_arrays(encrypted)
    assert {name: (array.dtype, array.shape) for name, array in arrays.items()} == {
        "he/weight": (np.int64, ()), "he/sizes": (np.int64, (2,)), "he/data": (np.uint8, (encrypted.nbytes,))}
    assert arrays["he/sizes"].tolist() == [len(chunk) for chunk in encrypted.chunks]
    assert is_encrypted(arrays) and not is_encrypted({"w": np.zeros(3)})
    assert from_arrays(arrays) == encrypted
    assert decoded(to_array_record(encrypted)) == encrypted  # through Flower's serialization too


def malformed(change: dict[str, np.ndarray | None]) -> dict[str, np.ndarray]:
    """Two ciphertexts of 3 and 2 bytes, with some arrays replaced (or removed when None)."""
    arrays = to_arrays(EncryptedSum((b"abc", b"de"), 4))
    arrays.update(change)
    return {name: array for name, array in arrays.items() if array is not None}


@pytest.mark.parametrize(("change", "reason"), [
    ({"he/sizes": None}, "no 'he/sizes' array"),
    ({"he/weight": None}, "no 'he/weight' array"),
    ({"he/00000": np.zeros(3, np.uint8)}, "unexpected array 'he/00000'"),
    ({"he/weight": np.array([4])}, "'he/weight' must be a scalar int64 array, got a 1-D int64 one"),
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


def test_replies_under_another_key_or_malformed_are_dropped_with_a_reason(keys):
    _, secret, public = keys
    arrays = {"w": np.linspace(-1, 1, 3000)}
    server = EncryptedAggregation(public, 3000)

    foreign = create_context()
    verdict = server.validate_reply(site_reply(foreign, arrays, 5), LIMITS, "num-examples")
    assert verdict.code == HE_KEY_MISMATCH
    assert foreign.fingerprint in verdict.detail and public.fingerprint in verdict.detail

    reply = site_reply(secret, arrays, 5)
    encrypted = decoded(reply["arrays"])
    reply["arrays"] = to_array_record(EncryptedSum((encrypted.chunks[0], b"garbage"), encrypted.weight))
    verdict = server.validate_reply(reply, LIMITS, "num-examples")
    assert verdict.code == MALFORMED and "not a TenSEAL CKKS vector" in verdict.detail

    torn = site_reply(secret, arrays, 5)
    layout = to_arrays(decoded(torn["arrays"]))
    layout["he/sizes"] = layout["he/sizes"] + np.array([1, 0])
    torn["arrays"] = ArrayRecord({name: Array(array) for name, array in layout.items()})
    verdict = server.validate_reply(torn, LIMITS, "num-examples")
    assert verdict.code == MALFORMED
    assert verdict.detail.startswith("encrypted update: the ciphertext sizes add up")

    short = site_reply(secret, {"w": arrays["w"][:2048]}, 5)
    assert "chunks, the model needs 2" in server.validate_reply(short, LIMITS, "num-examples").detail

    lying = site_reply(secret, arrays, 5)
    lying["metrics"] = MetricRecord({"num-examples": 500})
    assert "weighted by 5" in server.validate_reply(lying, LIMITS, "num-examples").detail


def test_the_encrypted_checkpoint_round_trips_with_its_plan(keys, tmp_path):
    _, secret, _ = keys
    arrays = to_arrays(encrypt_weighted(secret, np.linspace(0, 1, 100), 3))
    checkpoint = EncryptedCheckpoint(NetworkConfig(channels=(8, 16)), PLAN, "none", 4, secret.fingerprint,
                                     arrays)
    save_encrypted_checkpoint(checkpoint, tmp_path / "model.he")
    loaded = load_encrypted_checkpoint(tmp_path / "model.he")
    assert (loaded.round, loaded.fingerprint, loaded.plan, loaded.labels) == (
        4, secret.fingerprint, PLAN, PLAN.labels)
    assert list(loaded.arrays) == list(arrays)
    assert all(np.array_equal(loaded.arrays[name], arrays[name]) for name in arrays)
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


# -- a federation with HE on: the server's run loop and in-process ClientApps ------------------------

def he_site(node_id: int, name: str, data_dir: Path, folder: Path, secret_context: Path | None) -> Context:
    settings = SiteSettings(name, "ct", data_dir, folder / name / "events.jsonl", secret_context)
    return Context(run_id=1, node_id=node_id, node_config=settings.to_node_config(), state=RecordDict(),
                   run_config={})


def he_server_toml(folder: Path, public_context: Path | None, rounds: int = 1, extra: str = "") -> Path:
    he = f'[he]\nenabled = true\npublic_context = "{public_context}"\n' if public_context else ""
    path = folder / "server.toml"
    path.write_text(server_toml("run", rounds=rounds, extra=extra) + he)
    return path


@pytest.fixture(scope="module")
def site_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sites")
    return [write_disk_site(root / name, seed=seed) for seed, name in enumerate(("a", "b"))]


@pytest.fixture(scope="module")
def he_run(keys, site_dirs, tmp_path_factory):
    """A finished two-round FedProx run with HE on, two sites sharing the secret context."""
    files = keys[0]
    folder = tmp_path_factory.mktemp("he-run")
    with pytest.MonkeyPatch.context() as patch:
        for attribute, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
            patch.setattr(TaskIdentity, attribute, value)
        patch.setenv(CACHE_DIR_ENVIRONMENT, str(folder / "cache"))
        path = he_server_toml(folder, files.public_context, rounds=2)
        fedprox = 'augmentation = "none"\nstrategy = "fedprox"\nproximal_mu = 0.01'
        path.write_text(path.read_text().replace('augmentation = "none"', fedprox))
        grid = LocalGrid({11: he_site(11, "Site A", site_dirs[0], folder, files.secret_context),
                          12: he_site(12, "Site B", site_dirs[1], folder, files.secret_context)})
        state = run_server(grid, load_server_config(path), resume=False)
    return folder, state


def test_an_encrypted_run_trains_and_only_the_sites_can_read_the_model(he_run, keys):
    folder, state = he_run
    _, secret, public = keys
    statuses = {(r.round, r.phase, r.site): r.status for r in read_metrics(folder / "run" / METRICS_NAME)}
    assert set(statuses.values()) == {ACCEPTED} and len(statuses) == 6
    assert not (folder / "run" / "model.pt").exists()
    stored = load_encrypted_checkpoint(folder / "run" / ENCRYPTED_CHECKPOINT_NAME)
    assert (stored.round, stored.fingerprint) == (2, public.fingerprint) and is_encrypted(stored.arrays)
    with pytest.raises(CiphertextError, match="no secret key"):
        decrypt_global_with(public, stored.arrays, folder)
    site_model = load_checkpoint(folder / "Site A" / GLOBAL_MODEL_NAME)
    assert site_model.round == 2
    decrypted = decrypt_global_with(secret, stored.arrays, folder)
    assert max(float(np.max(np.abs(site_model.state_dict[name].numpy() - decrypted[name])))
               for name in decrypted) <= 1e-6


def decrypt_global_with(context, arrays, folder: Path) -> dict[str, np.ndarray]:
    training = model_of(load_server_config(folder / "server.toml"), PLAN)
    model = named_weights(SegmentationAlgorithm(training, device="cpu"))
    layout = Layout.of(model)
    return layout.unflatten(decrypt_average(context, from_arrays(arrays), layout.size))


def test_an_encrypted_run_resumes_from_its_encrypted_checkpoint(he_run, keys, site_dirs, tmp_path,
                                                                 server_identity):
    folder = shutil.copytree(he_run[0], tmp_path / "copy")
    files = keys[0]
    path = folder / "server.toml"
    path.write_text(path.read_text().replace("rounds = 2", "rounds = 3"))
    grid = LocalGrid({11: he_site(11, "Site A", site_dirs[0], folder, files.secret_context),
                      12: he_site(12, "Site B", site_dirs[1], folder, files.secret_context)})
    run_server(grid, load_server_config(path), resume=True)
    assert {r for r, _, kind in grid.delivered} == {3}
    assert load_encrypted_checkpoint(folder / "run" / ENCRYPTED_CHECKPOINT_NAME).round == 3
    other = write_he_keys(tmp_path / "other")
    path.write_text(path.read_text().replace(str(files.public_context), str(other.public_context)))
    with pytest.raises(ConfigError, match=f"under HE key {files.fingerprint}.*has key {other.fingerprint}"):
        run_server(grid, load_server_config(path), resume=True)


def test_a_site_with_another_key_is_refused_naming_both_fingerprints(keys, site_dirs, tmp_path,
                                                                     server_identity):
    files = keys[0]
    other = write_he_keys(tmp_path / "other")
    grid = LocalGrid({11: he_site(11, "Site A", site_dirs[0], tmp_path, files.secret_context),
                      12: he_site(12, "Site B", site_dirs[1], tmp_path, other.secret_context)})
    state = run_server(grid, load_server_config(he_server_toml(tmp_path, files.public_context)), resume=False)
    statuses = {(r.phase, r.node_id): r.status for r in state.records}
    assert statuses == {("train", 11): ACCEPTED, ("train", 12): HE_KEY_MISMATCH,
                        ("evaluate", 11): ACCEPTED, ("evaluate", 12): HE_KEY_MISMATCH}
    errors = [e["message"] for e in read_events(tmp_path / "Site B" / "events.jsonl") if e["kind"] == "error"]
    assert errors and files.fingerprint in errors[0] and other.fingerprint in errors[0]
    assert not (tmp_path / "Site B" / GLOBAL_MODEL_NAME).exists()


def test_a_site_that_encrypts_never_sends_a_plaintext_update(keys, site_dirs, tmp_path, server_identity):
    grid = LocalGrid({11: he_site(11, "Site A", site_dirs[0], tmp_path, keys[0].secret_context),
                      12: he_site(12, "Site B", site_dirs[1], tmp_path, None)})
    state = run_server(grid, load_server_config(he_server_toml(tmp_path, None)), resume=False)
    statuses = {(r.phase, r.node_id): r.status for r in state.records}
    assert statuses[("train", 11)] == HE_KEY_MISMATCH and statuses[("train", 12)] == ACCEPTED
    errors = [e["message"] for e in read_events(tmp_path / "Site A" / "events.jsonl") if e["kind"] == "error"]
    assert "asks for unencrypted updates" in errors[0]


def test_the_strategy_gives_each_sampled_site_a_share_of_the_capacity(keys, server_identity):
    public = keys[2]
    settings = FederationSettings(rounds=1, min_sites=2)
    strategy = build_strategy(settings, LIMITS, EncryptedAggregation(public, 10))
    record = ArrayRecord({"w": Array(np.zeros(10))})
    messages = list(strategy.configure_train(1, record, ConfigRecord({}), FakeGrid([1, 2])))
    assert [m.content["config"][MAX_MAGNITUDE_KEY] for m in messages] == [public.capacity / 2] * 2


# -- settings ------------------------------------------------------------------------------------------

def test_the_server_refuses_to_start_with_a_secret_context(keys, tmp_path, capsys):
    files = keys[0]
    with pytest.raises(ConfigError, match=r"\[he\] public_context is not usable: .* holds a secret key"):
        load_server_config(he_server_toml(tmp_path, files.secret_context))
    assert main(["server", "--config", str(tmp_path / "server.toml")]) == 2
    error = capsys.readouterr().err
    assert "holds a secret key, which the server must never have" in error and error.count("\n") == 1
    assert not (tmp_path / "run").exists()
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
