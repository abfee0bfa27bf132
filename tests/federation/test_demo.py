"""The demo's pieces without Flower processes: settings, the TOML files it writes (with HE: its keys, made
once, in [he] tables), each site's storage (orientation, spacing, field of view, format) and data reuse,
the per-round rows, the verdict, the report files (with the sites' storage and the plan in force), that
the baselines follow the federation's plan (the sites' merged fingerprints), and where an encrypted run's
final model comes from. The real federated run is what tests/e2e and `fedseg demo` run."""

import json
import re
from dataclasses import replace

import pytest

import federation.demo
from app.cli import main
from federation.config import load_server_config, load_site_config
from federation.demo.baselines import CENTRALIZED, local_only_name
from federation.demo.data import MARKER_NAME, NotDemoFolder, demo_datasets, site_data_spec, site_dataset
from federation.demo.federated import (
    HE_KEYS,
    JOIN_ANNOUNCEMENT,
    announced_site_config,
    demo_he_keys,
    final_model_file,
    run_federation,
    server_toml,
    site_event_file,
    site_model_file,
    site_thread_environment,
    site_toml,
    write_server_config,
)
from federation.demo.report import (
    FEDERATED,
    LABEL_CHART,
    MODEL_CHART,
    PERSONALISED,
    ROUND_CHART,
    DemoReport,
    report_markdown,
    round_rows,
    write_report,
)
from federation.demo.run import run_demo
from federation.demo.settings import SITE_STORAGE, DemoSettings
from federation.he.context import SECRET_CONTEXT_NAME
from federation.processes import FlowerProcessError
from federation.round_costs import RoundSummary, SiteCost
from federation.server_run import initial_weights, model_of, save_global_model
from federation.site_history import SiteRound
from segmentation.errors import CheckpointError, ConfigError
from segmentation.fingerprint import fingerprint_cases
from segmentation.geometry import canonical_spacing_and_size, orientation_code
from segmentation.io import read_volume
from segmentation.plan import Plan, make_plan, write_plan
from segmentation.settings import (
    PERSONALISED_MODEL,
    PERSONALISED_MODEL_NAME,
    PLAN_NAME,
    PrivacySettings,
    epsilon_by_round,
)

SITES = {"CT Hospital": "ct", "MR-T1 Clinic": "mr-t1"}
TINY = DemoSettings(sites=("ct", "mr-t1"), rounds=2, local_epochs=1, train_cases=2, test_cases=1,
                    volume_size=16, channels=(8, 16))
REPORT_PLAN = Plan(labels={0: "background", 1: "liver", 2: "kidney"}, spatial_dims=2,
                   target_spacing=(0.75, 0.75, 2.5), patch_size=(64, 48), overridden=("patch_size",))


@pytest.mark.parametrize(("changes", "message"), [
    ({"sites": ("ct", "pet")}, "demo sites must be some of ct, mr-t1, mr-t2, got pet"),
    ({"sites": ("ct", "ct")}, "one site only"),
    ({"rounds": 0}, "demo rounds must be at least 1, got 0"),
    ({"volume_size": 8}, "demo volume size must be between 16 and 512 pixels, got 8"),
])
def test_settings_refuse_what_the_demo_cannot_run(changes, message):
    with pytest.raises(ConfigError, match=message):
        DemoSettings(**changes)


def test_a_bad_sites_option_is_a_one_line_error(capsys):
    assert main(["demo", "--sites", "ct,xray"]) == 2
    error = capsys.readouterr().err
    assert error == "fedseg: error: demo sites must be some of ct, mr-t1, mr-t2, got xray\n"


def test_the_written_server_and_site_files_are_valid_and_use_tls(tmp_path):
    labels = {0: "background", 1: "liver"}
    (tmp_path / "server.toml").write_text(server_toml(TINY, labels, 9999))
    server = load_server_config(tmp_path / "server.toml")
    assert server.tls.enabled and server.tls.generate and server.host == "127.0.0.1"
    federation = server.federation
    assert (federation.rounds, federation.min_sites, federation.local_epochs) == (2, 2, 1)
    assert (federation.strategy, federation.augmentation) == ("fedavg", "gin")
    assert federation.augmentation_probability == TINY.augmentation_probability == 1.0
    assert server.model.labels == ("background", "liver") and server.model.channels == (8, 16)

    dataset = site_dataset(tmp_path / "data", site_data_spec(TINY, "mr-t1"))
    (tmp_path / "ca.crt").write_text("a certificate")
    (tmp_path / "site.toml").write_text(site_toml("MR-T1 Clinic", dataset, 9999, tmp_path / "ca.crt"))
    site = load_site_config(tmp_path / "site.toml")
    assert (site.name, site.modality, site.server_address) == ("MR-T1 Clinic", "mr-t1", "127.0.0.1:9999")
    assert site.tls_enabled and site.ca_certificate == tmp_path / "ca.crt"
    assert site.event_file == site_event_file(tmp_path, "MR-T1 Clinic")
    assert not site.privacy.dp
    private = site_toml("MR-T1 Clinic", dataset, 9999, tmp_path / "ca.crt", dp=True)
    (tmp_path / "site.toml").write_text(private)
    assert load_site_config(tmp_path / "site.toml").privacy == PrivacySettings(dp=True)  # --dp: the defaults


def test_a_dp_demo_reports_each_sites_epsilon_per_round(tmp_path):
    records = [
        SiteRound(1, "train", "CT Hospital", 7, "accepted", 32, 1.0, {"epsilon": 1.5}),
        SiteRound(1, "train", "MR-T1 Clinic", 8, "accepted", 32, 1.0, {"epsilon": 2.0}),
        SiteRound(2, "train", "CT Hospital", 7, "accepted", 32, 1.0, {"epsilon": 2.25}),
        SiteRound(2, "train", "MR-T1 Clinic", 8, "privacy-budget", None, None, {}),  # refused: spent stays
        SiteRound(2, "evaluate", "CT Hospital", 7, "accepted", 4, None, {"dice": 0.5}),
    ]
    assert epsilon_by_round(records) == {"CT Hospital": [(1, 1.5), (2, 2.25)], "MR-T1 Clinic": [(1, 2.0)]}
    report = report_with(scores())
    report.settings = replace(TINY, dp=True)
    report.epsilon_by_round = epsilon_by_round(records)
    write_report(report, tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert "Epsilon spent: CT Hospital 2.25, MR-T1 Clinic 2.00." in text
    assert "| round | CT Hospital | MR-T1 Clinic |" in text and "| 1 | 1.50 | 2.00 |" in text
    assert "| 2 | 2.25 |  |" in text
    assert json.loads((tmp_path / "report.json").read_text())["dp"] == {
        "enabled": True, "epsilon": {"CT Hospital": 2.25, "MR-T1 Clinic": 2.0},
        "epsilon_by_round": {"CT Hospital": [[1, 1.5], [2, 2.25]], "MR-T1 Clinic": [[1, 2.0]]}}


def test_the_epsilon_table_of_a_long_run_shows_a_few_rounds_and_the_last(tmp_path):
    report = report_with(scores())
    report.settings = replace(TINY, dp=True)
    report.epsilon_by_round = {"CT Hospital": [(number, number / 10) for number in range(1, 81)]}
    write_report(report, tmp_path)
    text = (tmp_path / "report.md").read_text()
    shown = [int(number) for number in re.findall(r"^\| (\d+) \| \d+\.\d\d \|$", text, re.MULTILINE)]
    assert shown[0] == 1 and shown[-1] == 80 and 5 <= len(shown) <= 9
    assert "| 80 | 8.00 |" in text


def test_site_data_is_reused_until_its_settings_change(tmp_path):
    spec = site_data_spec(TINY, "ct")
    first = site_dataset(tmp_path, spec)
    assert (len(first.training), len(first.test), first.modality) == (2, 1, "ct")
    image = first.training[0].image
    made = image.stat().st_mtime_ns
    assert site_dataset(tmp_path, spec) == first and image.stat().st_mtime_ns == made
    bigger = site_data_spec(DemoSettings(sites=("ct",), train_cases=3, test_cases=1, volume_size=16), "ct")
    assert len(site_dataset(tmp_path, bigger).training) == 3
    assert json.loads((tmp_path / MARKER_NAME).read_text()) == bigger


def test_an_older_or_changed_storage_remakes_the_site_folder(tmp_path):
    spec = site_data_spec(TINY, "ct")
    site_dataset(tmp_path, spec)
    assert all(case.image.is_dir() for case in site_dataset(tmp_path, spec).training)  # DICOM series
    as_nifti = {**spec, "geometry": {**spec["geometry"], "orientation": "RAS", "file_format": "nifti"}}
    remade = site_dataset(tmp_path, as_nifti)
    image = read_volume(remade.training[0].image)
    assert remade.training[0].image.name.endswith(".nii.gz") and orientation_code(image.direction) == "RAS"
    assert not [path for path in (tmp_path / "imagesTr").iterdir() if path.is_dir()]  # no stale series
    assert json.loads((tmp_path / MARKER_NAME).read_text()) == as_nifti

    made = remade.training[0].image.stat().st_mtime_ns
    older = {key: value for key, value in as_nifti.items() if key != "geometry"}  # a demo folder of before
    (tmp_path / MARKER_NAME).write_text(json.dumps(older))
    assert site_dataset(tmp_path, as_nifti).training[0].image.stat().st_mtime_ns != made


def test_each_site_stores_its_phantoms_as_its_scanner_would():
    def storage(modality, settings=None):
        return site_data_spec(settings or DemoSettings(), modality)["geometry"]

    # The defaults: 64 px over 400 mm (6.25 mm pixels) and 16 slices of 12.5 mm.
    assert storage("ct") == {"orientation": "LPS", "spacing": [5.0, 5.0, 12.5], "field_of_view_mm": 400.0,
                             "file_format": "dicom"}
    assert storage("mr-t1") == {"orientation": "PIR", "spacing": [7.8125, 7.8125, 12.5],
                                "field_of_view_mm": 400.0, "file_format": "nifti"}
    assert storage("mr-t2") == {"orientation": "RAS", "spacing": [6.25, 6.25, 20.0],
                                "field_of_view_mm": 480.0, "file_format": "nifti"}
    # At 16 px a coarser pixel would leave fewer than 16 pixels in-plane: it clamps to 400 mm / 16.
    assert storage("mr-t1", TINY)["spacing"] == [25.0, 25.0, 25.0]
    assert storage("ct", TINY)["spacing"] == [20.0, 20.0, 25.0]
    assert set(SITE_STORAGE) == set(DemoSettings().sites)


# 32 px: 12.5 mm reference pixels, 8 slices of 25 mm; nothing clamps.
STORED = {"CT Hospital": ("LPS", (10.0, 10.0, 25.0), (40, 40, 8), "dicom"),
          "MR-T1 Clinic": ("PIR", (15.625, 15.625, 25.0), (26, 26, 8), "nifti"),
          "MR-T2 Clinic": ("RAS", (12.5, 12.5, 40.0), (38, 38, 5), "nifti")}


def test_the_written_studies_read_back_in_each_sites_storage(tmp_path):
    settings = DemoSettings(train_cases=1, test_cases=1, volume_size=32)
    datasets = demo_datasets(tmp_path, settings)
    assert list(datasets) == list(STORED)
    for site, (orientation, spacing, size, file_format) in STORED.items():
        case = datasets[site].test[0]
        image, label = read_volume(case.image), read_volume(case.label)
        assert orientation_code(image.direction) == orientation, site
        canonical_spacing, canonical_size = canonical_spacing_and_size(image)
        assert canonical_spacing == pytest.approx(spacing) and canonical_size == size, site
        for name in ("direction", "spacing", "origin"):  # labels follow their image
            assert getattr(label, name) == pytest.approx(getattr(image, name)), (site, name)
        if file_format == "dicom":
            assert case.image.is_dir() and len(list(case.image.glob("*.dcm"))) == size[2]
        else:
            assert case.image.is_file() and case.image.name.endswith(".nii.gz")
    sagittal = read_volume(datasets["MR-T1 Clinic"].test[0].image)
    assert sagittal.spacing == pytest.approx((15.625, 25.0, 15.625))  # stored along P, I, R


def test_sites_get_their_own_seeds_and_share_the_cores():
    seeds = {site_data_spec(DemoSettings(), modality)["seed"] for modality in ("ct", "mr-t1", "mr-t2")}
    assert len(seeds) == 3
    assert int(site_thread_environment(3)["OMP_NUM_THREADS"]) >= 1


def test_round_rows_put_each_score_after_the_rounds_it_follows():
    records = [
        SiteRound(1, "train", "CT Hospital", 7, "accepted", 32, 1.0,
                  {"before/dice": 0.1, "after/dice": 0.4, "train-loss": 0.9}),
        SiteRound(1, "train", "MR-T1 Clinic", 8, "non-finite", 32, None, {"before/dice": 0.1}),
        SiteRound(2, "train", "CT Hospital", 7, "accepted", 32, 1.0,
                  {"before/dice": 0.3, "after/dice": 0.6, "train-loss": 0.5}),
        SiteRound(2, "evaluate", "CT Hospital", 7, "accepted", 4, None, {"dice": 0.55}),
    ]
    rows = {(row["round"], row["site"]): row for row in round_rows(records)}
    assert [rows[(n, "CT Hospital")]["global_dice"] for n in (0, 1, 2)] == [0.1, 0.3, 0.55]
    assert (rows[(1, "CT Hospital")]["local_dice"], rows[(2, "CT Hospital")]["train_loss"]) == (0.4, 0.5)
    dropped = rows[(1, "MR-T1 Clinic")]
    assert dropped["status"] == "non-finite" and dropped["local_dice"] is None
    assert rows[(0, "MR-T1 Clinic")]["global_dice"] is None  # a dropped reply's numbers are not used


def report_with(dice: dict[str, dict[str, float]]) -> DemoReport:
    """A report whose models score `dice[model][site]` (every label alike)."""
    report = DemoReport(TINY, dict(SITES), REPORT_PLAN, seconds={"federated": 12.0})
    report.rounds = [{"round": n, "site": site, "global_dice": 0.2 * n, "local_dice": 0.3 if n else None,
                      "train_loss": None, "status": "accepted"} for n in (0, 1, 2) for site in SITES]
    report.results = [{"model": model, "test_site": site, "dice": value,
                       "dice_per_label": {"liver": value, "kidney": value}, "hd95": 5.0}
                      for model, scores in dice.items() for site, value in scores.items()]
    return report


def scores(federated=(0.80, 0.76), centralized=(0.82, 0.80), ct_local=(0.81, 0.20), mr_local=(0.30, 0.77),
           personalised=(0.80, 0.78)):
    """Dice per model and test set; each site's personalised model is scored on its own test set only."""
    return {FEDERATED: dict(zip(SITES, federated, strict=True)),
            CENTRALIZED: dict(zip(SITES, centralized, strict=True)),
            local_only_name("CT Hospital"): dict(zip(SITES, ct_local, strict=True)),
            local_only_name("MR-T1 Clinic"): dict(zip(SITES, mr_local, strict=True)),
            PERSONALISED: dict(zip(SITES, personalised, strict=True))}


def test_the_verdict_measures_all_three_targets():
    verdict = report_with(scores()).verdict()
    assert verdict["met"] and all(verdict["checks"].values())
    assert verdict["federated_to_centralized"] == pytest.approx(0.78 / 0.81)
    assert verdict["local_only_mean_dice"] == pytest.approx((0.505 + 0.535) / 2)
    assert verdict["own_modality"]["CT Hospital"]["change"] == pytest.approx(-0.01)  # 0.80 against 0.81

    behind = report_with(scores(federated=(0.70, 0.70))).verdict()
    assert not behind["checks"]["federated_vs_centralized"] and not behind["met"]
    one_site_loses = report_with(scores(personalised=(0.85, 0.74))).verdict()
    assert one_site_loses["checks"]["federated_vs_centralized"]
    assert not one_site_loses["checks"]["personalised_keeps_own_modality"] and not one_site_loses["met"]
    no_gain = report_with(scores(ct_local=(0.81, 0.76), mr_local=(0.80, 0.77))).verdict()  # mean 0.785
    assert not no_gain["checks"]["federated_above_local_only"] and not no_gain["met"]
    without_personalised = {model: dice for model, dice in scores().items() if model != PERSONALISED}
    assert not report_with(without_personalised).verdict()["checks"]["personalised_keeps_own_modality"]


def test_the_per_site_table_sets_every_model_side_by_side_on_the_sites_own_test_set():
    report = report_with(scores())
    assert report.site_table()["MR-T1 Clinic"] == {"global": 0.76, "personalised": 0.78, "centralized": 0.80,
                                                   "local_only": 0.77}
    assert report.ratio_to_centralized() == pytest.approx(0.78 / 0.81)


def test_without_baselines_there_is_no_verdict():
    assert report_with({FEDERATED: scores()[FEDERATED]}).verdict() is None


def test_the_report_files(tmp_path):
    report = report_with(scores(federated=(0.85, 0.74), personalised=(0.85, 0.74)))
    write_report(report, tmp_path)
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["verdict"]["met"] is False and data["mean_dice"][FEDERATED] == pytest.approx(0.795)
    assert data["ratio_to_centralized"] == pytest.approx(0.795 / 0.81)
    assert data["per_site"]["CT Hospital"]["personalised"] == 0.85
    assert len(data["rounds"]) == 6 and data["settings"]["sites"] == ["ct", "mr-t1"]
    assert data["plan"] == {"description": REPORT_PLAN.describe(), **REPORT_PLAN.to_dict()}
    assert Plan.from_dict(data["plan"]) == REPORT_PLAN
    for chart in (ROUND_CHART, LABEL_CHART, MODEL_CHART):
        assert (tmp_path / chart).read_bytes().startswith(b"\x89PNG")
    markdown = (tmp_path / "report.md").read_text()
    assert markdown == report_markdown(report)
    assert "worst MR-T1 Clinic -0.030" in markdown and "Targets NOT met." in markdown
    assert f"| {local_only_name('CT Hospital')} | 0.810 | 0.200 | 0.505 |" in markdown
    assert f"plan: {REPORT_PLAN.describe()}" in markdown and "## The plan" in markdown
    assert "| target spacing (mm, x y z) | 0.75 x 0.75 x 2.5 (slices as stored) |" in markdown
    assert "| patch size (pixels) | 64 x 48 |" in markdown and "| set by hand | patch_size |" in markdown
    # Each site's storage, at TINY's 16 px (the MR-T1 clinic's coarser pixels clamp to 16 pixels).
    assert data["storage"]["CT Hospital"] == {
        "orientation": "LPS", "spacing": [20.0, 20.0, 25.0], "field_of_view_mm": 400.0,
        "file_format": "dicom", "voxels": [20, 20, 8],
        "description": "LPS, 20 x 20 x 25 mm voxels, 400 mm field of view, dicom"}
    assert data["storage"]["MR-T1 Clinic"]["orientation"] == "PIR"
    assert "## The sites' data" in markdown
    assert "| CT Hospital | ct | DICOM series | LPS | 20 x 20 x 25 | 400 | 20 x 20 x 8 |" in markdown
    assert "| MR-T1 Clinic | mr-t1 | NIfTI | PIR | 25 x 25 x 25 | 400 | 16 x 16 x 8 |" in markdown


TINY_HE = replace(TINY, he=True)
LABELS = {0: "background", 1: "liver"}


def test_the_demo_makes_its_he_keys_once_and_reuses_them(tmp_path):
    keys = demo_he_keys(tmp_path)
    assert keys.secret_context == (tmp_path / HE_KEYS / SECRET_CONTEXT_NAME).resolve()
    assert keys.secret_context.stat().st_mode & 0o777 == 0o600
    made = {path: path.stat().st_mtime_ns for path in (keys.secret_context, keys.public_context)}
    assert demo_he_keys(tmp_path) == keys
    assert {path: path.stat().st_mtime_ns for path in made} == made

    keys.public_context.write_bytes(b"not a context")  # damaged: the demo makes a new pair
    remade = demo_he_keys(tmp_path)
    assert remade.fingerprint != keys.fingerprint and demo_he_keys(tmp_path) == remade


def test_with_he_the_server_gets_the_public_context_and_every_site_the_secret_one(tmp_path):
    keys = demo_he_keys(tmp_path)
    config = write_server_config(tmp_path, TINY_HE, LABELS, keys)
    assert config.he.enabled and config.he.context == keys.public_context
    assert config.he.fingerprint == keys.fingerprint

    (tmp_path / "ca.crt").write_text("a certificate")
    for modality in TINY_HE.sites:
        name = TINY_HE.site_name(modality)
        dataset = site_dataset(tmp_path / modality, site_data_spec(TINY_HE, modality))
        path = tmp_path / f"{modality}-site.toml"
        path.write_text(site_toml(name, dataset, config.fleet_port, tmp_path / "ca.crt", keys,
                                  sites=len(TINY_HE.sites)))
        site = load_site_config(path)
        assert (site.he_secret_context, site.he_fingerprint) == (keys.secret_context, keys.fingerprint)
        assert site.masking.min_sites == min(3, len(TINY_HE.sites))  # a two-site demo masks with 2

    plain = write_server_config(tmp_path, TINY, LABELS)
    assert not plain.he.enabled and "[he]" not in (tmp_path / "server.toml").read_text()
    with pytest.raises(ConfigError, match="at least two sites with --he"):
        replace(TINY_HE, sites=("ct",))


def test_the_final_model_is_the_servers_without_he_and_a_sites_decrypted_copy_with_it(tmp_path):
    plain = write_server_config(tmp_path, TINY, LABELS)
    assert final_model_file(tmp_path, plain, SITES) == plain.run_dir / "model.pt"

    encrypted = write_server_config(tmp_path, TINY_HE, LABELS, demo_he_keys(tmp_path))
    with pytest.raises(CheckpointError, match="no demo site kept the decrypted global model"):
        final_model_file(tmp_path, encrypted, SITES)
    kept = site_model_file(tmp_path, "MR-T1 Clinic")
    assert kept.parent == site_event_file(tmp_path, "MR-T1 Clinic").parent
    kept.parent.mkdir(parents=True)
    kept.write_bytes(b"")
    assert final_model_file(tmp_path, encrypted, SITES) == kept


def merged_plan(datasets) -> Plan:
    """The plan of every site's training cases pooled, made here without the federation's code."""
    cases = [case for dataset in datasets.values() for case in dataset.training]
    labels = next(iter(datasets.values())).labels
    return make_plan(fingerprint_cases(cases, labels), 2, TINY.channels, TINY.batch_size)


FAKE_SUMMARY = RoundSummary(2, 3.5, (SiteCost("CT Hospital", "accepted", 2.0, 1000, 900),))


def federation_without_processes(folder, settings, datasets, on_event, *joining):
    """What a run leaves behind: the server's config, its plan.json (the plan of the sites' merged
    fingerprints), its events (one round's summary) and the final model: the server's model.pt, or with
    HE each site's decrypted copy; and every site's personalised model."""
    keys = demo_he_keys(folder) if settings.he else None
    config = write_server_config(folder, settings, datasets["CT Hospital"].labels, keys)
    training = model_of(config, merged_plan(datasets))
    write_plan(training.plan, config.run_dir / PLAN_NAME)
    models = [site_model_file(folder, site) for site in datasets] if keys else [config.run_dir / "model.pt"]
    for path in models:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_global_model(path, training, initial_weights(training), settings.rounds, settings.local_epochs)
    for site, dataset in datasets.items():
        path = site_model_file(folder, site, PERSONALISED_MODEL_NAME)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_global_model(path, training, initial_weights(training), settings.rounds, settings.local_epochs,
                          kind=PERSONALISED_MODEL, train_modality=dataset.modality)
    event = {"kind": "checkpoint", "round": 2, "summary": FAKE_SUMMARY.to_dict()}
    (config.run_dir / "events.jsonl").write_text(json.dumps(event) + "\n")
    return config


def test_the_baselines_and_the_report_follow_the_federations_plan(tmp_path, monkeypatch):
    trained = []

    def baselines(training, datasets, epochs, events_path, listeners):
        trained.append((training, epochs))
        return {}

    monkeypatch.setattr("federation.demo.run.run_federation", federation_without_processes)
    monkeypatch.setattr("federation.demo.run.train_baselines", baselines)
    report = run_demo(tmp_path, TINY, baselines=True)
    datasets = {name: site_dataset(tmp_path / "data" / modality, site_data_spec(TINY, modality))
                for name, modality in SITES.items()}
    expected = merged_plan(datasets)
    assert [(training.plan, epochs) for training, epochs in trained] == [(expected, TINY.total_epochs)]
    assert report.plan == expected
    written = json.loads((tmp_path / "report.json").read_text())["plan"]
    assert Plan.from_dict(written) == expected
    # Each site's personalised model is scored on its own test set; the rounds' costs come from the events.
    personalised = [row["test_site"] for row in report.results if row["model"] == PERSONALISED]
    assert personalised == list(SITES)
    assert report.round_summaries == [FAKE_SUMMARY]


def test_an_encrypted_demo_scores_the_sites_model_and_its_report_names_the_key(tmp_path, monkeypatch):
    monkeypatch.setattr("federation.demo.run.run_federation", federation_without_processes)
    report = run_demo(tmp_path, TINY_HE)
    fingerprint = demo_he_keys(tmp_path / "federation").fingerprint
    assert report.he_fingerprint == fingerprint
    assert [(row["model"], row["test_site"]) for row in report.results] == [
        *((FEDERATED, s) for s in SITES), *((PERSONALISED, s) for s in SITES)]
    assert json.loads((tmp_path / "report.json").read_text())["he"] == {"enabled": True,
                                                                       "fingerprint": fingerprint}
    assert f"Masked, homomorphically encrypted aggregation (BFV) with HE key **{fingerprint}**" in (
        tmp_path / "report.md").read_text()
    assert "encrypted" not in report_markdown(report_with(scores()))


def test_the_he_option_turns_encryption_on(monkeypatch, capsys):
    asked = []

    def stop(out, settings, **options):
        asked.append(settings.he)
        raise ConfigError("stopped before running")

    monkeypatch.setattr(federation.demo, "run_demo", stop)
    assert main(["demo", "--sites", "ct,mr-t1", "--he"]) == 2 and main(["demo", "--sites", "ct"]) == 2
    assert asked == [True, False] and "stopped before running" in capsys.readouterr().err


class FakeFederation:
    """Stands in for the demo's Flower processes: records which sites were started; the SuperLink counts
    them online, and with `outside_joins` also the announced outside site. The submitted run writes
    `events` (by default just "finished") and Flower reports it as `status`."""

    def __init__(self, folder, outside_joins=True, events=({"kind": "finished"},), status="running"):
        self.folder, self.outside_joins = folder, outside_joins
        self.started, self.submitted = [], False
        federation = self

        class Cli:
            def online_nodes(self):
                outside = federation.outside_joins and (folder / JOIN_ANNOUNCEMENT).is_file()
                return len(federation.started) + outside

        class Server:
            def __init__(self, config):
                self.config, self.cli, self.state_dir = config, Cli(), config.run_dir / "flower"
                self.events_path = config.run_dir / "events.jsonl"
                self.tls = type("Tls", (), {"ca_certificate": folder / "ca.crt"})()

            def start(self):
                self.tls.ca_certificate.write_text("a certificate")

            def submit(self):
                federation.submitted = True
                self.events_path.parent.mkdir(parents=True, exist_ok=True)
                self.events_path.write_text("".join(json.dumps(event) + "\n" for event in events))

            def check_alive(self):
                pass

            def status(self):
                return status

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                pass

        class Site:
            def __init__(self, config, environment):
                self.config = config

            def start(self):
                federation.started.append(self.config.name)

            def connected(self):
                return True

            def supervise(self):
                pass

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                pass

        self.server, self.site = Server, Site


@pytest.fixture
def fake_federation(tmp_path, monkeypatch):
    def install(outside_joins=True, **run):
        fake = FakeFederation(tmp_path / "federation", outside_joins, **run)
        monkeypatch.setattr("federation.demo.federated.FederationServer", fake.server)
        monkeypatch.setattr("federation.demo.federated.FederationSite", fake.site)
        monkeypatch.setattr("federation.demo.federated._NODE_POLL_SECONDS", 0.0)
        monkeypatch.setattr("federation.demo.federated._STATUS_POLL_SECONDS", 0.0)
        return fake

    datasets = {TINY.site_name(modality): site_dataset(tmp_path / "data" / modality,
                                                       site_data_spec(TINY, modality))
                for modality in TINY.sites}
    return install, datasets


def test_the_joining_site_is_announced_not_started_and_the_run_waits_for_it(tmp_path, fake_federation):
    install, datasets = fake_federation
    fake = install()
    folder = tmp_path / "federation"
    (folder / "sites").mkdir(parents=True)
    (folder / JOIN_ANNOUNCEMENT).write_text('{"site_toml": "a previous demo\'s"}')
    stages = []
    run_federation(folder, TINY, datasets, join_site="mr-t1", on_stage=stages.append)
    assert fake.started == ["CT Hospital"] and fake.submitted
    announced = announced_site_config(folder)
    assert announced == (folder / "mr-t1-site.toml").resolve()
    site = load_site_config(announced)
    assert (site.name, site.modality) == ("MR-T1 Clinic", "mr-t1")
    assert site.data_dir == datasets["MR-T1 Clinic"].root
    assert site.ca_certificate == folder / "ca.crt"
    assert len(stages) == 1 and f"fedseg site --config {announced}" in stages[0] and "10 min" in stages[0]


def test_without_a_joining_site_every_site_starts_and_nothing_is_announced(tmp_path, fake_federation):
    install, datasets = fake_federation
    fake = install()
    run_federation(tmp_path / "federation", TINY, datasets)
    assert fake.started == ["CT Hospital", "MR-T1 Clinic"] and fake.submitted
    assert announced_site_config(tmp_path / "federation") is None


def test_a_site_that_never_joins_stops_the_demo_with_its_site_toml(tmp_path, fake_federation, monkeypatch):
    install, datasets = fake_federation
    fake = install(outside_joins=False)
    monkeypatch.setattr("federation.demo.federated._JOIN_TIMEOUT", 0.0)
    with pytest.raises(FlowerProcessError, match=r"the site CT Hospital \(.*ct-site.toml\) did not join"):
        run_federation(tmp_path / "federation", TINY, datasets, join_site="ct")
    assert fake.started == ["MR-T1 Clinic"] and not fake.submitted


def test_the_join_site_option_reaches_the_demo_and_must_be_one_of_its_sites(tmp_path, monkeypatch, capsys):
    asked = []

    def stop(out, settings, **options):
        asked.append(options["join_site"])
        raise ConfigError("stopped before running")

    monkeypatch.setattr(federation.demo, "run_demo", stop)
    assert main(["demo", "--sites", "ct,mr-t1", "--join-site", "ct"]) == 2 and asked == ["ct"]
    capsys.readouterr()
    monkeypatch.undo()
    assert main(["demo", "--sites", "ct", "--join-site", "mr-t2", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error == "fedseg: error: the joining site must be one of the demo's sites (ct), got mr-t2\n"
    assert not (tmp_path / "data").exists()  # refused before any work


ACCEPTED_ROUND_1 = {"kind": "site-metrics", "round": 1, "site": "CT Hospital", "phase": "train",
                    "status": "accepted", "metrics": {}}


@pytest.mark.parametrize(("events", "status", "message"), [
    ([ACCEPTED_ROUND_1, {"kind": "checkpoint", "round": 1}, {"kind": "error", "message": "boom"}],
     "finished:completed", "the demo run failed: boom"),
    ([{"kind": "checkpoint", "round": 1}], "finished:completed", "round 1: no site's reply was accepted"),
    ([ACCEPTED_ROUND_1, {"kind": "checkpoint", "round": 1}], "finished:failed",
     "the demo run ended as finished:failed"),
])
def test_a_failed_run_stops_the_demo_with_the_reason(tmp_path, fake_federation, events, status, message):
    """Each check on its own: Flower calling the run finished never hides the run's own failure."""
    install, datasets = fake_federation
    install(events=events, status=status)
    with pytest.raises(FlowerProcessError, match=message):
        run_federation(tmp_path / "federation", TINY, datasets)


def test_a_site_folder_holding_other_files_is_never_remade(tmp_path):
    spec = site_data_spec(DemoSettings(sites=("ct",), train_cases=1, test_cases=1, volume_size=16), "ct")
    site_dataset(tmp_path, spec)
    (tmp_path / "notes.txt").write_text("the user's notes")
    changed = {**spec, "train_cases": 2}
    with pytest.raises(NotDemoFolder, match="notes.txt, which the demo did not write"):
        site_dataset(tmp_path, changed)
    assert (tmp_path / "notes.txt").read_text() == "the user's notes"
    assert json.loads((tmp_path / MARKER_NAME).read_text()) == spec  # nothing was remade


def test_the_report_shows_what_each_round_cost_when_the_run_recorded_it(tmp_path):
    report = report_with({FEDERATED: scores()[FEDERATED]})
    assert "What each round cost" not in report_markdown(report)  # a run without round summaries
    report.round_summaries = [RoundSummary(1, 12.5, (
        SiteCost("CT Hospital", "accepted", 10.0, 4096, 2048),
        SiteCost("MR-T1 Clinic", "norm-outlier", 7.5, 4096, 4096),
    ))]
    write_report(report, tmp_path)
    assert json.loads((tmp_path / "report.json").read_text())["round_summaries"] == [
        {"round": 1, "wall_s": 12.5, "work_s": 10.0, "overhead_s": 2.5, "sites": [
            {"site": "CT Hospital", "status": "accepted", "work_s": 10.0,
             "array_bytes_sent": 4096, "array_bytes_received": 2048},
            {"site": "MR-T1 Clinic", "status": "norm-outlier", "work_s": 7.5,
             "array_bytes_sent": 4096, "array_bytes_received": 4096}]}]
    markdown = (tmp_path / "report.md").read_text()
    assert "## What each round cost" in markdown
    assert ("| round | wall s | slowest site s | overhead s | CT Hospital (KiB in/out) | "
            "MR-T1 Clinic (KiB in/out) |") in markdown
    assert "| 1 | 12.5 | 10.0 | 2.5 | accepted 2.0/4.0 | norm-outlier 4.0/4.0 |" in markdown
