"""The demo's pieces without Flower processes: settings, the TOML files it writes, data reuse, the per-round
rows, the verdict and the report files. The real federated run is what tests/e2e and `fedseg demo` run."""

import json

import pytest

from app.cli import main
from federation.config import load_server_config, load_site_config
from federation.demo.baselines import CENTRALIZED, local_only_name
from federation.demo.data import MARKER_NAME, site_data_spec, site_dataset
from federation.demo.federated import server_toml, site_event_file, site_thread_environment, site_toml
from federation.demo.report import (
    FEDERATED,
    LABEL_CHART,
    MODEL_CHART,
    ROUND_CHART,
    DemoReport,
    report_markdown,
    round_rows,
    write_report,
)
from federation.demo.settings import DemoSettings
from federation.site_history import SiteRound
from segmentation.errors import ConfigError

SITES = {"CT Hospital": "ct", "MR-T1 Clinic": "mr-t1"}
TINY = DemoSettings(sites=("ct", "mr-t1"), rounds=2, local_epochs=1, train_cases=2, test_cases=1,
                    volume_size=16, image_size=16, channels=(8, 16))


@pytest.mark.parametrize(("changes", "message"), [
    ({"sites": ("ct", "pet")}, "demo sites must be some of ct, mr-t1, mr-t2, got pet"),
    ({"sites": ("ct", "ct")}, "one site only"),
    ({"rounds": 0}, "demo rounds must be at least 1, got 0"),
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
    assert server.model.labels == ("background", "liver") and server.model.channels == (8, 16)

    dataset = site_dataset(tmp_path / "data", site_data_spec(TINY, "mr-t1"))
    (tmp_path / "ca.crt").write_text("a certificate")
    (tmp_path / "site.toml").write_text(site_toml("MR-T1 Clinic", dataset, 9999, tmp_path / "ca.crt"))
    site = load_site_config(tmp_path / "site.toml")
    assert (site.name, site.modality, site.server_address) == ("MR-T1 Clinic", "mr-t1", "127.0.0.1:9999")
    assert site.tls_enabled and site.ca_certificate == tmp_path / "ca.crt"
    assert site.event_file == site_event_file(tmp_path, "MR-T1 Clinic")


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
    report = DemoReport(TINY, dict(SITES), seconds={"federated": 12.0})
    report.rounds = [{"round": n, "site": site, "global_dice": 0.2 * n, "local_dice": 0.3 if n else None,
                      "train_loss": None, "status": "accepted"} for n in (0, 1, 2) for site in SITES]
    report.results = [{"model": model, "test_site": site, "dice": value,
                       "dice_per_label": {"liver": value, "kidney": value}, "hd95": 5.0}
                      for model, scores in dice.items() for site, value in scores.items()]
    return report


def scores(federated=(0.80, 0.76), centralized=(0.82, 0.80), ct_local=(0.81, 0.20), mr_local=(0.30, 0.77)):
    return {FEDERATED: dict(zip(SITES, federated, strict=True)),
            CENTRALIZED: dict(zip(SITES, centralized, strict=True)),
            local_only_name("CT Hospital"): dict(zip(SITES, ct_local, strict=True)),
            local_only_name("MR-T1 Clinic"): dict(zip(SITES, mr_local, strict=True))}


def test_the_verdict_measures_all_three_targets():
    verdict = report_with(scores()).verdict()
    assert verdict["met"] and all(verdict["checks"].values())
    assert verdict["federated_to_centralized"] == pytest.approx(0.78 / 0.81)
    assert verdict["local_only_mean_dice"] == pytest.approx((0.505 + 0.535) / 2)
    assert verdict["own_modality"]["CT Hospital"]["change"] == pytest.approx(-0.01)

    behind = report_with(scores(federated=(0.70, 0.70))).verdict()
    assert not behind["checks"]["federated_vs_centralized"] and not behind["met"]
    one_site_loses = report_with(scores(federated=(0.85, 0.74))).verdict()
    assert one_site_loses["checks"]["federated_vs_centralized"]
    assert not one_site_loses["checks"]["no_site_loses_own_modality"] and not one_site_loses["met"]


def test_without_baselines_there_is_no_verdict():
    assert report_with({FEDERATED: scores()[FEDERATED]}).verdict() is None


def test_the_report_files(tmp_path):
    report = report_with(scores(federated=(0.85, 0.74)))
    write_report(report, tmp_path)
    data = json.loads((tmp_path / "report.json").read_text())
    assert data["verdict"]["met"] is False and data["mean_dice"][FEDERATED] == pytest.approx(0.795)
    assert len(data["rounds"]) == 6 and data["settings"]["sites"] == ["ct", "mr-t1"]
    for chart in (ROUND_CHART, LABEL_CHART, MODEL_CHART):
        assert (tmp_path / chart).read_bytes().startswith(b"\x89PNG")
    markdown = (tmp_path / "report.md").read_text()
    assert markdown == report_markdown(report)
    assert "worst MR-T1 Clinic -0.030" in markdown and "Targets NOT met." in markdown
    assert f"| {local_only_name('CT Hospital')} | 0.810 | 0.200 | 0.505 |" in markdown
