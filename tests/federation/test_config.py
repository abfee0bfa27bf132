"""server.toml / site.toml: the templates load, and every kind of mistake names file, key and reason."""

import shutil
from pathlib import Path

import pytest

from federation.config import load_server_config, load_site_config
from federation.keys import generate_node_keys
from federation.validation import ValidationLimits
from segmentation.errors import ConfigError

TEMPLATES = Path(__file__).resolve().parents[2] / "assets" / "config"

MINIMAL_SERVER = """
[model]
labels = ["background", "liver"]

[federation]
rounds = 3
min_sites = 2
"""

LIVER = 'labels = ["background", "liver"]\n'

MINIMAL_SITE = """
[site]
name = "MR Clinic"
modality = "mr-t1"
data_dir = "data"

[server]
address = "127.0.0.1:9092"

[tls]
enabled = false
"""


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(text)
    return path


@pytest.fixture
def site_folder(tmp_path) -> Path:
    (tmp_path / "data").mkdir()
    return tmp_path


def test_server_template_loads_with_documented_defaults(tmp_path):
    config = load_server_config(shutil.copy(TEMPLATES / "server.toml", tmp_path))
    assert (config.host, config.fleet_port) == ("0.0.0.0", 9092)
    assert config.model.labels == ("background", "liver", "kidney", "spleen", "pancreas")
    assert config.model.channels == (32, 64, 128, 256)
    assert (config.model.target_spacing, config.model.patch_size) == (None, None)  # the plan decides
    assert config.run_dir == (tmp_path / "runs" / "server").resolve()
    federation = config.federation
    assert (federation.rounds, federation.min_sites, federation.strategy, federation.augmentation) == (
        10, 2, "fedavg", "gin")
    assert federation.round_timeout == 120.0 and federation.share_site_metrics is True
    assert federation.personalise_epochs == 10
    assert federation.augmentation_probability == 0.3
    assert config.validation == ValidationLimits(max_num_examples=1e6, norm_outlier_k=5, norm_min_spread=0.5)
    assert config.tls.enabled and config.tls.generate
    assert config.site_public_keys == () and not config.he.enabled


def test_site_template_loads_once_its_files_exist(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "certs").mkdir()
    (tmp_path / "certs" / "ca.crt").write_text("-----BEGIN CERTIFICATE-----\n")
    config = load_site_config(shutil.copy(TEMPLATES / "site.toml", tmp_path))
    assert (config.name, config.modality) == ("CT Hospital", "ct")
    assert config.server_address == "fl.example.org:9092"
    assert config.data_dir == (tmp_path / "data").resolve()
    assert config.ca_certificate == (tmp_path / "certs" / "ca.crt").resolve()
    assert config.event_file == (tmp_path / "runs" / "site" / "events.jsonl").resolve()
    assert config.node_private_key is None and config.he_secret_context is None


def test_a_minimal_server_config_takes_defaults(tmp_path):
    config = load_server_config(write(tmp_path, "server.toml", MINIMAL_SERVER))
    assert (config.federation.rounds, config.federation.min_sites, config.federation.fraction) == (3, 2, 1.0)
    assert config.federation.min_valid_replies == 1 and config.federation.local_epochs == 1
    assert config.federation.personalise_epochs == 0  # no site fine-tunes unless asked


def test_fedprox_with_mu_and_listed_site_keys(tmp_path):
    pair = generate_node_keys(tmp_path / "keys", "site-a")
    given = tmp_path / "tls"
    given.mkdir()
    for name in ("ca.crt", "server.pem", "server.key"):
        (given / name).write_text("x")
    config = load_server_config(write(tmp_path, "server.toml", MINIMAL_SERVER + """
strategy = "fedprox"
proximal_mu = 0.01

[tls]
ca_certificate = "tls/ca.crt"
certificate = "tls/server.pem"
private_key = "tls/server.key"

[auth]
site_public_keys = ["keys/site-a.pub"]
"""))
    assert (config.federation.strategy, config.federation.proximal_mu) == ("fedprox", 0.01)
    assert config.site_public_keys == (pair.public_key.resolve(),)
    assert config.tls.certificate == (given / "server.pem").resolve() and not config.tls.generate


def test_the_brief_example_message(tmp_path):
    path = write(tmp_path, "server.toml", '[federation]\nrounds = "three"\nmin_sites = 2\n')
    with pytest.raises(ConfigError) as error:
        load_server_config(path)
    assert str(error.value) == f"{path}: [federation] rounds must be a positive integer, got 'three'"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("rounds = 0", "[federation] rounds must be a positive integer, got 0"),
        ("rounds = true", "[federation] rounds must be a positive integer, got True"),
        ("round = 3", "[federation] round is not a known setting (did you mean 'rounds'?)"),
        ("rounds = [", "not valid TOML"),
        ('strategy = "fedsgd"', "[federation] strategy must be one of fedavg, fedprox, got 'fedsgd'"),
        ('strategy = "fedprox"', "[federation] proximal_mu must be above 0 with strategy"),
        ("proximal_mu = 0.1", '[federation] proximal_mu is only used with strategy = "fedprox"'),
        ("fraction = 0", "[federation] fraction must be a number above 0 and at most 1, got 0"),
        ("fraction = 1.5", "[federation] fraction must be a number above 0 and at most 1, got 1.5"),
        ("round_timeout = -1", "[federation] round_timeout must be a number above 0, got -1"),
        ('augmentation = "gan"', "[federation] augmentation must be one of none, gin"),
        ("augmentation_probability = 1.5",
         "[federation] augmentation_probability must be a number at least 0 and at most 1, got 1.5"),
        ('share_site_metrics = "yes"', "[federation] share_site_metrics must be true or false, got 'yes'"),
        ("[server]\nfleet_port = 70000", "[server] fleet_port must be an integer from 1 to 65535, got 70000"),
        ("[server]\nserverappio_port = 9091", "[server] serverappio_port is not a known setting"),
        ("[validation]\nnorm_outlier_k = 0", "[validation] norm_outlier_k must be a number above 0"),
        ('[tls]\ncertificate = "missing.pem"', "[tls] certificate names 'missing.pem', which does not exist"),
        ('[tls]\nca_certificate = "server.toml"', "[tls] certificate is missing: give all of"),
        ("[tls]\nenabled = false\nverify = true", "[tls] verify is not a known setting"),
        ('[auth]\nsite_public_keys = "a.pub"', "[auth] site_public_keys must be a list of paths"),
        ('[auth]\nsite_public_keys = ["nope.pub"]', "[auth] site_public_keys[0] names 'nope.pub'"),
        ("[he]\nenabled = true", "[he] public_context is required when enabled = true"),
        ('[he]\npublic_context = "server.toml"', "[he] public_context is set but homomorphic encryption"),
        ("[federaton]", "unknown table [federaton] (did you mean 'federation'?)"),
    ],
)
def test_server_mistakes_name_the_key_and_reason(tmp_path, change, expected):
    """`change` replaces the line `rounds = 3` when it sets rounds, else it is appended."""
    if change.startswith("rounds"):
        text = MINIMAL_SERVER.replace("rounds = 3", change)
    else:
        text = MINIMAL_SERVER + change
    path = write(tmp_path, "server.toml", text + "\n")
    with pytest.raises(ConfigError) as error:
        load_server_config(path)
    message = str(error.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert expected in message


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("batch_size = 4", "[model] labels is required but missing"),
        ('labels = ["background"]', "[model] labels must be a list of at least 2 different names"),
        ('labels = ["background", "liver", "liver"]', "[model] labels must be a list of at least 2"),
        ('labels = ["background", "liver"]\nchannels = [8]', "[model] channels must be a list of at least 2"),
        (LIVER + "patch_size = [96, 20]",
         "[model] patch_size must be multiples of 8 for 4 levels of channels, got [96, 20]"),
        (LIVER + "patch_size = [96]", "[model] patch_size must be a list of 2 positive integers, got [96]"),
        (LIVER + "patch_size = [96.0, 96]", "[model] patch_size must be a list of 2 positive integers"),
        (LIVER + "target_spacing = [0.8, 0.8]",
         "[model] target_spacing must be a list of 3 positive numbers, got [0.8, 0.8]"),
        (LIVER + "target_spacing = [0.8, 0, 2]", "[model] target_spacing must be a list of 3 positive"),
        (LIVER + "target_spacing = [0.8, nan, 2]", "[model] target_spacing must be a list of 3 positive"),
        ('labels = ["background", "liver"]\nlearning_rate = 0', "[model] learning_rate must be a number"),
    ],
)
def test_model_mistakes_name_the_key_and_reason(tmp_path, model, expected):
    text = MINIMAL_SERVER.replace('labels = ["background", "liver"]', model)
    with pytest.raises(ConfigError) as error:
        load_server_config(write(tmp_path, "server.toml", text))
    assert expected in str(error.value)


def test_image_size_is_gone_and_says_where_the_plan_comes_from(tmp_path):
    path = write(tmp_path, "server.toml", MINIMAL_SERVER.replace("[model]", "[model]\nimage_size = 96"))
    with pytest.raises(ConfigError) as error:
        load_server_config(path)
    assert str(error.value) == (
        f"{path}: [model] image_size is no longer a setting: the plan (target spacing, patch size) now "
        "comes from the sites' fingerprints before round 1; remove it (an expert may set target_spacing = "
        "[x, y, z] and patch_size = [y, x])")


def test_an_expert_may_override_the_plans_spacing_and_patch_size(tmp_path):
    overrides = "[model]\ntarget_spacing = [0.8, 0.8, 2]\npatch_size = [128, 96]\n"
    path = write(tmp_path, "server.toml", MINIMAL_SERVER.replace("[model]\n", overrides))
    config = load_server_config(path)
    assert (config.model.target_spacing, config.model.patch_size) == ((0.8, 0.8, 2.0), (128, 96))
    assert config.model.label_map == {0: "background", 1: "liver"}


def test_a_missing_required_key_and_a_missing_file(tmp_path):
    with pytest.raises(ConfigError, match=r"\[federation\] min_sites is required but missing"):
        load_server_config(write(tmp_path, "server.toml", "[federation]\nrounds = 3\n"))
    with pytest.raises(ConfigError, match="the configuration file does not exist"):
        load_server_config(tmp_path / "absent.toml")


def test_settings_outside_a_table_are_refused(tmp_path):
    path = write(tmp_path, "server.toml", "rounds = 3\n" + MINIMAL_SERVER)
    with pytest.raises(ConfigError, match=r"rounds is outside any table; settings belong in \[server\], "):
        load_server_config(path)


def test_a_file_that_is_not_a_site_key_is_refused(tmp_path):
    write(tmp_path, "site.pub", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBAD not-ecdsa\n")
    path = write(tmp_path, "server.toml", MINIMAL_SERVER + '[auth]\nsite_public_keys = ["site.pub"]\n')
    with pytest.raises(ConfigError, match=r"site_public_keys\[0\] is not usable: .*not an ECDSA public key"):
        load_server_config(path)


def test_a_minimal_site_config(site_folder):
    config = load_site_config(write(site_folder, "site.toml", MINIMAL_SITE))
    assert (config.name, config.modality, config.clientappio_port) == ("MR Clinic", "mr-t1", 9094)
    assert not config.tls_enabled and config.ca_certificate is None
    assert config.event_file == (site_folder / "site-events.jsonl").resolve()


def test_a_site_with_its_node_key(site_folder):
    pair = generate_node_keys(site_folder / "keys")
    key_entry = '[auth]\nnode_private_key = "keys/{}"\n'
    config = load_site_config(write(site_folder, "site.toml", MINIMAL_SITE + key_entry.format("node.key")))
    assert config.node_private_key == pair.private_key.resolve()
    with pytest.raises(ConfigError, match=r"\[auth\] node_private_key is not usable"):
        load_site_config(write(site_folder, "site.toml", MINIMAL_SITE + key_entry.format("node.pub")))


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ('name = "MR Clinic"', 'name = "../etc/site"', "[site] name must be 1-64 letters"),
        ('modality = "mr-t1"', 'modality = "pet"', "[site] modality must be one of ct, mr, mr-t1, mr-t2"),
        ('data_dir = "data"', 'data_dir = "nowhere"', "[site] data_dir names 'nowhere', which does not"),
        ('data_dir = "data"', 'data_dir = "site.toml"', "which is not a folder"),
        ('address = "127.0.0.1:9092"', 'address = "127.0.0.1"', "[server] address must be HOST:PORT"),
        ("enabled = false", "enabled = true", "[tls] ca_certificate is required but missing"),
        ('name = "MR Clinic"', 'name = "MR Clinic"\nmodalty = "ct"', "(did you mean 'modality'?)"),
    ],
)
def test_site_mistakes_name_the_key_and_reason(site_folder, old, new, expected):
    assert old in MINIMAL_SITE
    path = write(site_folder, "site.toml", MINIMAL_SITE.replace(old, new, 1))
    with pytest.raises(ConfigError) as error:
        load_site_config(path)
    assert str(error.value).startswith(f"{path}: ") and expected in str(error.value)


def test_a_site_pins_its_peers_and_masks_with_at_least_min_mask_sites(site_folder):
    from federation.he.context import write_he_keys
    from federation.keys import fingerprint, load_public_key

    keys = write_he_keys(site_folder / "he")
    pairs = [generate_node_keys(site_folder / "peers", name) for name in ("a", "b", "c")]
    (site_folder / "peers" / "a.key").unlink()  # a folder of public keys only, as handed out
    he = f'[he]\nenabled = true\nsecret_context = "{keys.secret_context}"\n'
    config = load_site_config(write(site_folder, "site.toml", MINIMAL_SITE + he))
    assert (config.masking.peer_keys, config.masking.min_sites) == (None, 3)
    config = load_site_config(write(site_folder, "site.toml", MINIMAL_SITE + he
                                    + 'peer_keys = "peers"\nmin_mask_sites = 4\n'))
    assert config.masking.min_sites == 4
    assert config.masking.pinned() == {fingerprint(load_public_key(pair.public_key)) for pair in pairs}


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ("min_mask_sites = 1\n", "[he] min_mask_sites must be an integer of at least 2, got 1"),
        ('min_mask_sites = "3"\n', "[he] min_mask_sites must be an integer of at least 2"),
        ('peer_keys = "nowhere"\n', "[he] peer_keys names 'nowhere', which does not exist"),
        ('peer_keys = "empty"\n', "[he] peer_keys is not usable: the peer key folder"),
        ('peer_keys = "junk"\n', "[he] peer_keys is not usable:"),
    ],
)
def test_masking_mistakes_name_the_key_and_reason(site_folder, entries, expected):
    from federation.he.context import write_he_keys

    keys = write_he_keys(site_folder / "he")
    (site_folder / "empty").mkdir()
    (site_folder / "junk").mkdir()
    (site_folder / "junk" / "x.pub").write_text("not a key\n")
    he = f'[he]\nenabled = true\nsecret_context = "{keys.secret_context}"\n'
    with pytest.raises(ConfigError) as error:
        load_site_config(write(site_folder, "site.toml", MINIMAL_SITE + he + entries))
    assert expected in str(error.value)
