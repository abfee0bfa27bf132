"""Encrypted runs through the server's own round loop and the sites' ClientApp, without Flower processes.

What must hold: an encrypted run trains (every site's training ends in a masked upload the server adds)
and only the sites can read the model: the server keeps model.he, which its public context cannot
decrypt, and the sites' global-model.pt equals its decryption; a resumed run continues from model.he;
a site under another key, or one that does not encrypt, is refused; a site's mask key signed with a key
the server did not register keeps that site out while the others finish the round.
"""

import shutil
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flwr.app import Context, RecordDict
from flwr.supercore.task_identity import TaskIdentity
from site_data import PLAN, server_toml, write_disk_site
from test_server_app import LocalGrid

from federation.config import load_server_config
from federation.he.aggregation import CiphertextError, decrypt_average
from federation.he.checkpoint import ENCRYPTED_CHECKPOINT_NAME, load_encrypted_checkpoint
from federation.he.context import load_public_context, load_secret_context, write_he_keys
from federation.he.masking_settings import MaskingSettings
from federation.he.packing import Layout
from federation.he.records import HE_KEY_MISMATCH, from_arrays, is_encrypted
from federation.he.secure_round import BAD_MASK_KEY
from federation.round_costs import round_summaries
from federation.server_run import EVENTS_NAME, METRICS_NAME, model_of, read_metrics, run_server
from federation.task import SiteSettings, named_weights
from federation.validation import ACCEPTED
from segmentation.algorithm import SegmentationAlgorithm
from segmentation.case_cache import CACHE_DIR_ENVIRONMENT
from segmentation.checkpoint import load_checkpoint
from segmentation.errors import ConfigError
from segmentation.events import read_events
from segmentation.settings import GLOBAL_MODEL_NAME

pytestmark = pytest.mark.usefixtures("case_cache")  # conftest: each test its own case cache
NAMES = ("Site A", "Site B", "Site C")


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return write_he_keys(tmp_path_factory.mktemp("he-keys"))


@pytest.fixture(scope="module")
def site_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("sites")
    return [write_disk_site(root / name, seed=seed) for seed, name in enumerate(("a", "b", "c"))]


DEFAULT_MASKING = MaskingSettings()


def he_site(node_id: int, name: str, data_dir: Path, folder: Path, secret_context: Path | None,
            masking: MaskingSettings = DEFAULT_MASKING) -> Context:
    settings = SiteSettings(name, "ct", data_dir, folder / name / "events.jsonl", secret_context,
                            masking=masking)
    return Context(run_id=1, node_id=node_id, node_config=settings.to_node_config(), state=RecordDict(),
                   run_config={})


def he_server_toml(folder: Path, public_context: Path | None, rounds: int = 1, extra: str = "") -> Path:
    he = f'[he]\nenabled = true\npublic_context = "{public_context}"\n' if public_context else ""
    path = folder / "server.toml"
    path.write_text(server_toml("run", rounds=rounds, extra=extra) + he)
    return path


def three_sites(folder: Path, site_dirs, secret_contexts, masking=DEFAULT_MASKING) -> LocalGrid:
    return LocalGrid({11 + index: he_site(11 + index, name, data, folder, secret, masking)
                      for index, (name, data, secret) in enumerate(zip(NAMES, site_dirs, secret_contexts,
                                                                       strict=True))})


@pytest.fixture(scope="module")
def he_run(keys, site_dirs, tmp_path_factory):
    """A finished two-round FedProx run with HE on, three sites sharing the secret context."""
    folder = tmp_path_factory.mktemp("he-run")
    with pytest.MonkeyPatch.context() as patch:
        for attribute, value in (("_run_id", 1), ("_node_id", 0), ("_task_id", 1)):
            patch.setattr(TaskIdentity, attribute, value)
        patch.setenv(CACHE_DIR_ENVIRONMENT, str(folder / "cache"))
        path = he_server_toml(folder, keys.public_context, rounds=2)
        fedprox = 'augmentation = "none"\nstrategy = "fedprox"\nproximal_mu = 0.01'
        path.write_text(path.read_text().replace('augmentation = "none"', fedprox))
        grid = three_sites(folder, site_dirs, [keys.secret_context] * 3)
        state = run_server(grid, load_server_config(path), resume=False)
    return folder, state, grid


def decrypt_global_with(context, arrays, folder: Path) -> dict[str, np.ndarray]:
    training = model_of(load_server_config(folder / "server.toml"), PLAN)
    model = named_weights(SegmentationAlgorithm(training, device="cpu"))
    layout = Layout.of(model)
    return layout.unflatten(decrypt_average(context, from_arrays(arrays), layout.size))


def test_an_encrypted_run_trains_and_only_the_sites_can_read_the_model(he_run, keys):
    folder, _, grid = he_run
    statuses = {(r.round, r.phase, r.site): r.status for r in read_metrics(folder / "run" / METRICS_NAME)}
    assert set(statuses.values()) == {ACCEPTED} and len(statuses) == 9  # 2 training rounds, 1 evaluation
    # Round 1 asked each site for its masked upload; round 2's training messages carried the roster of
    # the mask keys the round-1 uploads brought, so its training replies held the uploads: no query.
    uploads = [(number, node) for number, node, kind in grid.delivered if kind == "query" and number > 0]
    assert sorted(uploads) == [(1, node) for node in (11, 12, 13)]
    assert not (folder / "run" / "model.pt").exists()
    stored = load_encrypted_checkpoint(folder / "run" / ENCRYPTED_CHECKPOINT_NAME)
    assert (stored.round, stored.fingerprint) == (2, keys.fingerprint) and is_encrypted(stored.arrays)
    with pytest.raises(CiphertextError, match="no secret key"):
        decrypt_global_with(load_public_context(keys.public_context), stored.arrays, folder)
    site_model = load_checkpoint(folder / "Site A" / GLOBAL_MODEL_NAME)
    assert site_model.round == 2
    decrypted = decrypt_global_with(load_secret_context(keys.secret_context), stored.arrays, folder)
    assert max(float(np.max(np.abs(site_model.state_dict[name].numpy() - decrypted[name])))
               for name in decrypted) <= 1e-6
    # Each round's costs count every site's masked upload (which follows its training reply): one seeded
    # ciphertext of about 12.4 KB per 2048 values (1.52 x float32 bytes for a full one).
    chunks = -(-Layout.of(decrypted).size // 2048)
    for summary in round_summaries(read_events(folder / "run" / EVENTS_NAME)):
        received = [cost.array_bytes_received for cost in summary.sites]
        assert len(received) == 3 and all(12_000 * chunks < size < 13_000 * chunks for size in received)


def test_an_encrypted_run_resumes_from_its_encrypted_checkpoint(he_run, keys, site_dirs, tmp_path,
                                                                 server_identity):
    folder = shutil.copytree(he_run[0], tmp_path / "copy")
    path = folder / "server.toml"
    path.write_text(path.read_text().replace("rounds = 2", "rounds = 3"))
    grid = three_sites(folder, site_dirs, [keys.secret_context] * 3)
    run_server(grid, load_server_config(path), resume=True)
    assert {number for number, _, kind in grid.delivered} == {3}
    assert load_encrypted_checkpoint(folder / "run" / ENCRYPTED_CHECKPOINT_NAME).round == 3
    other = write_he_keys(tmp_path / "other")
    path.write_text(path.read_text().replace(str(keys.public_context), str(other.public_context)))
    with pytest.raises(ConfigError, match=f"under HE key {keys.fingerprint}.*has key {other.fingerprint}"):
        run_server(grid, load_server_config(path), resume=True)


def test_a_site_with_another_key_is_refused_naming_both_fingerprints(keys, site_dirs, tmp_path,
                                                                     server_identity):
    other = write_he_keys(tmp_path / "other")
    grid = three_sites(tmp_path, site_dirs, [keys.secret_context, other.secret_context, keys.secret_context],
                       MaskingSettings(min_sites=2))
    state = run_server(grid, load_server_config(he_server_toml(tmp_path, keys.public_context)), resume=False)
    statuses = {(r.phase, r.node_id): r.status for r in state.records}
    assert statuses == {("train", 11): ACCEPTED, ("train", 12): HE_KEY_MISMATCH, ("train", 13): ACCEPTED,
                        ("evaluate", 11): ACCEPTED, ("evaluate", 12): HE_KEY_MISMATCH,
                        ("evaluate", 13): ACCEPTED}
    errors = [e["message"] for e in read_events(tmp_path / "Site B" / "events.jsonl") if e["kind"] == "error"]
    assert errors and keys.fingerprint in errors[0] and other.fingerprint in errors[0]
    assert not (tmp_path / "Site B" / GLOBAL_MODEL_NAME).exists()


def test_a_site_that_encrypts_never_sends_a_plaintext_update(keys, site_dirs, tmp_path, server_identity):
    grid = three_sites(tmp_path, site_dirs, [keys.secret_context, None, None])
    state = run_server(grid, load_server_config(he_server_toml(tmp_path, None)), resume=False)
    statuses = {(r.phase, r.node_id): r.status for r in state.records}
    assert statuses[("train", 11)] == HE_KEY_MISMATCH and statuses[("train", 12)] == ACCEPTED
    errors = [e["message"] for e in read_events(tmp_path / "Site A" / "events.jsonl") if e["kind"] == "error"]
    assert "asks for unencrypted updates" in errors[0]


def write_node_key(folder: Path, name: str) -> tuple[Path, Path]:
    """An OpenSSH P-384 key pair as `fedseg keys node` writes it (private, public)."""
    key = ec.generate_private_key(ec.SECP384R1())
    folder.mkdir(parents=True, exist_ok=True)
    private, public = folder / f"{name}.key", folder / f"{name}.pub"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                     serialization.PublicFormat.OpenSSH))
    return private, public


def test_a_mask_key_signed_with_an_unregistered_node_key_keeps_that_site_out(keys, site_dirs, tmp_path,
                                                                           server_identity):
    """The server pins mask keys to the registered node keys: a site signing with another key is dropped
    as bad-mask-key (one line, in the server's records) and the round goes on with the others."""
    registered = [write_node_key(tmp_path / "registered", name) for name in ("a", "b", "c")]
    rogue, _ = write_node_key(tmp_path / "rogue", "c")
    peers = tmp_path / "registered"
    contexts = {}
    for index, (name, data) in enumerate(zip(NAMES, site_dirs, strict=True)):
        node_key = rogue if index == 2 else registered[index][0]
        contexts[11 + index] = he_site(11 + index, name, data, tmp_path, keys.secret_context,
                                       MaskingSettings(node_key, peers, min_sites=2))
    keys_list = ", ".join(f'"{public}"' for _, public in registered)
    path = he_server_toml(tmp_path, keys.public_context,
                          extra=f"[auth]\nsite_public_keys = [{keys_list}]\n")
    state = run_server(LocalGrid(contexts), load_server_config(path), resume=False)
    statuses = {(r.phase, r.node_id): r.status for r in state.records}
    assert statuses[("train", 13)] == BAD_MASK_KEY
    assert statuses[("train", 11)] == statuses[("train", 12)] == ACCEPTED
    assert load_encrypted_checkpoint(tmp_path / "run" / ENCRYPTED_CHECKPOINT_NAME).round == 1


class UploadLosingGrid(LocalGrid):
    """A grid on which one site's upload never arrives: it drops after the masks are fixed."""

    def __init__(self, sites: dict[int, Context], lost: int) -> None:
        super().__init__(sites)
        self.lost = lost

    def send_and_receive(self, messages, timeout):
        replies = super().send_and_receive(messages, timeout)
        return [reply for reply in replies
                if not (reply.metadata.src_node_id == self.lost and _is_upload(reply))]


def _is_upload(reply) -> bool:
    return reply.has_content() and "he/weight" in reply.content.get("arrays", {})


def test_a_site_whose_upload_is_lost_leaves_a_round_the_survivors_unmask(keys, site_dirs, tmp_path,
                                                                         server_identity):
    contexts = three_sites(tmp_path, site_dirs, [keys.secret_context] * 3,
                           MaskingSettings(min_sites=2)).sites
    grid = UploadLosingGrid(contexts, lost=13)
    state = run_server(grid, load_server_config(he_server_toml(tmp_path, keys.public_context)), resume=False)
    statuses = {(r.phase, r.node_id): r.status for r in state.records}
    assert statuses[("train", 13)] == "no-upload"
    assert statuses[("train", 11)] == statuses[("train", 12)] == ACCEPTED
    examples = {r.node_id: r.num_examples for r in state.records if r.phase == "train"}
    stored = load_encrypted_checkpoint(tmp_path / "run" / ENCRYPTED_CHECKPOINT_NAME)
    assert int(stored.arrays["he/weight"]) == examples[11] + examples[12]
    assert int(stored.arrays["he/total"]) == examples[11] + examples[12] + examples[13]
    for name in ("Site A", "Site B"):
        events = read_events(tmp_path / name / "events.jsonl")
        corrections = [event for event in events if event["kind"] == "mask-correction"]
        assert [e["peers"] for e in corrections] == [1]
    # The survivors' corrections cancel the lost site's masks: the model decrypts to sane weights.
    decrypted = decrypt_global_with(load_secret_context(keys.secret_context), stored.arrays, tmp_path)
    site_model = load_checkpoint(tmp_path / "Site A" / GLOBAL_MODEL_NAME)
    assert max(float(np.max(np.abs(site_model.state_dict[name].numpy() - decrypted[name])))
               for name in decrypted) <= 1e-6
    assert max(float(np.max(np.abs(value))) for value in decrypted.values()) < 8
