"""The demo's report: how each site stores its data, the plan, per-site Dice per round, what each round
cost (wall time, overhead, array bytes per site), every model on every site's test set, and the verdict.

report.json is for machines, report.md for people; dice_per_round.png and final_dice_per_label.png
(plus dice_by_model.png with baselines) are the charts report.md shows.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from federation.demo.baselines import CENTRALIZED, local_only_name
from federation.demo.data import geometry_spec
from federation.demo.settings import DemoSettings
from federation.round_costs import RoundSummary, round_table
from federation.site_history import EVALUATE, TRAIN, SiteRound
from segmentation.metrics import EvaluationResult
from segmentation.plan import Plan
from segmentation.reporting import grouped_bar_chart, line_chart, markdown_table, write_json
from segmentation.synth import PhantomGeometry, phantom_depth
from segmentation.synth.scan import scan_grid

FEDERATED = "federated"
PERSONALISED = "personalised"  # each site's own: the final global model fine-tuned on the site's data
# The demo's targets (issue 14), after the method paper's 93-98% of centralized: the global model against
# the pooled one and the local-only ones; each site's personalised model against its local-only one.
REQUIRED_CENTRALIZED_RATIO = 0.93
ALLOWED_OWN_MODALITY_DROP = 0.02

ROUND_CHART = "dice_per_round.png"
LABEL_CHART = "final_dice_per_label.png"
MODEL_CHART = "dice_by_model.png"
FORMAT_NAMES = {"dicom": "DICOM series", "nifti": "NIfTI"}
TABLE_ROUNDS = 8  # rows of report.md's epsilon table, spread over the run (report.json has every round)


def round_rows(records: Iterable[SiteRound]) -> list[dict[str, Any]]:
    """Per round k (0 = before the first) and site: the global model's Dice on the site's test set after
    k rounds (the site scores it when round k + 1 arrives, and once more at the end), and the site's
    status, train loss and Dice after its local training in round k."""
    rows: dict[tuple[int, str], dict[str, Any]] = {}

    def row(done: int, site: str) -> dict[str, Any]:
        return rows.setdefault((done, site), {"round": done, "site": site, "global_dice": None,
                                              "local_dice": None, "train_loss": None, "status": None})

    for record in records:
        metrics = record.metrics if record.accepted else {}
        if record.phase == TRAIN:
            row(record.round - 1, record.site)["global_dice"] = metrics.get("before/dice")
            row(record.round, record.site).update(status=record.status, local_dice=metrics.get("after/dice"),
                                                  train_loss=metrics.get("train-loss"))
        elif record.phase == EVALUATE:
            row(record.round, record.site)["global_dice"] = metrics.get("dice")
    return [rows[key] for key in sorted(rows)]


def result_row(model: str, site: str, evaluation: EvaluationResult) -> dict[str, Any]:
    return {"model": model, "test_site": site, "dice": evaluation.dice,
            "dice_per_label": dict(evaluation.label_dice), "hd95": evaluation.hd95}


@dataclass
class DemoReport:
    """A demo's settings, its sites (name -> modality), the plan every model followed (the federation's),
    per-round rows, the server's round summaries, final results and timings; with encrypted aggregation
    (settings.he) the fingerprint of the key the run used. How each site stores its data follows from the
    settings (`storage`)."""

    settings: DemoSettings
    sites: dict[str, str]
    plan: Plan
    rounds: list[dict[str, Any]] = field(default_factory=list)
    results: list[dict[str, Any]] = field(default_factory=list)
    seconds: dict[str, float] = field(default_factory=dict)
    he_fingerprint: str | None = None
    # With settings.dp: each site's epsilon spent after each of its accepted training rounds.
    epsilon_by_round: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    round_summaries: list[RoundSummary] = field(default_factory=list)

    @property
    def epsilon(self) -> dict[str, float]:
        """Each DP site's epsilon spent at the end: after its last accepted training round."""
        return {site: pairs[-1][1] for site, pairs in self.epsilon_by_round.items() if pairs}

    @property
    def storage(self) -> dict[str, PhantomGeometry]:
        """How each site stores its phantoms (orientation, spacing, field of view, file format)."""
        return {site: self.settings.site_geometry(modality) for site, modality in self.sites.items()}

    def storage_rows(self) -> dict[str, dict[str, Any]]:
        """Each site's storage as JSON values, with its voxel grid (x y z) and a one-line description."""
        depth = phantom_depth(self.settings.volume_size, 3)
        return {site: {**geometry_spec(geometry),
                       "voxels": list(scan_grid(self.settings.volume_size, depth, geometry).shape),
                       "description": geometry.describe()}
                for site, geometry in self.storage.items()}

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(row["model"] for row in self.results))

    def dice(self, model: str, site: str) -> float:
        value = self._dice_or_none(model, site)
        if value is None:
            raise KeyError(f"no Dice of the {model} model on {site}'s test set")
        return value

    def mean_dice(self, model: str) -> float:
        """The model's mean Dice over every site's test set."""
        return statistics.fmean(self.dice(model, site) for site in self.sites)

    def site_table(self) -> dict[str, dict[str, float | None]]:
        """Per site, on its own test set: the global, personalised, local-only and centralized models'
        Dice (None for a model the run did not make)."""
        models = {"global": FEDERATED, "personalised": PERSONALISED, "centralized": CENTRALIZED}
        return {site: {**{column: self._dice_or_none(model, site) for column, model in models.items()},
                       "local_only": self._dice_or_none(local_only_name(site), site)}
                for site in self.sites}

    def _dice_or_none(self, model: str, site: str) -> float | None:
        return next((r["dice"] for r in self.results if r["model"] == model and r["test_site"] == site), None)

    def ratio_to_centralized(self) -> float | None:
        """The global model's mean Dice over every site's test set against the centralized model's."""
        if CENTRALIZED not in self.models or not self.mean_dice(CENTRALIZED):
            return None
        return self.mean_dice(FEDERATED) / self.mean_dice(CENTRALIZED)

    def verdict(self) -> dict[str, Any] | None:
        """The demo's targets, measured; None without baselines. The global model must reach the ratio
        of the centralized one and beat the local-only models' mean over all test sets (the gain of
        training across modalities); each site's personalised model must be within the allowed drop of
        its local-only model on its own test set."""
        ratio = self.ratio_to_centralized()
        if ratio is None:
            return None
        federated = self.mean_dice(FEDERATED)
        local_only = statistics.fmean(self.mean_dice(local_only_name(site)) for site in self.sites)
        own = {site: {key: row[key] for key in ("global", "personalised", "local_only")}
               for site, row in self.site_table().items()}
        for values in own.values():
            mine = values["personalised"]
            values["change"] = None if mine is None else mine - values["local_only"]
        changes = [values["change"] for values in own.values()]
        checks = {
            "federated_vs_centralized": ratio >= REQUIRED_CENTRALIZED_RATIO,
            "federated_above_local_only": federated > local_only,
            "personalised_keeps_own_modality": None not in changes
            and min(changes) >= -ALLOWED_OWN_MODALITY_DROP,
        }
        return {
            "federated_mean_dice": federated,
            "centralized_mean_dice": self.mean_dice(CENTRALIZED),
            "federated_to_centralized": ratio,
            "required_federated_to_centralized": REQUIRED_CENTRALIZED_RATIO,
            "local_only_mean_dice": local_only,
            "own_modality": own,
            "allowed_own_modality_drop": ALLOWED_OWN_MODALITY_DROP,
            "checks": checks,
            "met": all(checks.values()),
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "demo": "federated cross-modality segmentation",
            "settings": asdict(self.settings),
            "sites": self.sites,
            "storage": self.storage_rows(),
            "plan": {"description": self.plan.describe(), **self.plan.to_dict()},
            "seconds": self.seconds,
            "he": {"enabled": self.settings.he, "fingerprint": self.he_fingerprint},
            "dp": {"enabled": self.settings.dp, "epsilon": self.epsilon,
                   "epsilon_by_round": {site: [list(pair) for pair in pairs]
                                        for site, pairs in self.epsilon_by_round.items()}},
            "rounds": self.rounds,
            "round_summaries": [summary.to_dict() for summary in self.round_summaries],
            "results": self.results,
            "mean_dice": {model: self.mean_dice(model) for model in self.models},
            "ratio_to_centralized": self.ratio_to_centralized(),
            "per_site": self.site_table(),
            "verdict": self.verdict(),
        }


def write_report(report: DemoReport, out: Path) -> None:
    """report.json, report.md and the charts into `out`."""
    write_json(report.to_json(), out / "report.json")
    global_dice: dict[str, dict[int, float]] = {}
    local_dice: dict[str, dict[int, float]] = {}
    for row in report.rounds:
        done, site = row["round"], row["site"]
        if row["global_dice"] is not None:
            global_dice.setdefault(f"{site} (global model)", {})[done] = row["global_dice"]
        if row["local_dice"] is not None:
            local_dice.setdefault(f"{site} (after local training)", {})[done] = row["local_dice"]
    line_chart({**global_dice, **local_dice}, out / ROUND_CHART,
               title="Dice on each site's test set per round", xlabel="rounds completed",
               ylabel="mean foreground Dice", dashed=list(local_dice))
    grouped_bar_chart(
        {site: _label_dice(report, FEDERATED, site) for site in report.sites}, out / LABEL_CHART,
        title="Final federated model: Dice per label on each site's test set", ylabel="Dice",
    )
    if len(report.models) > 1:
        grouped_bar_chart({site: {model: report.dice(model, site) for model in report.models}
                           for site in report.sites}, out / MODEL_CHART,
                          title="Mean Dice per model on each site's test set", ylabel="mean foreground Dice")
    (out / "report.md").write_text(report_markdown(report), encoding="utf-8")


def _label_dice(report: DemoReport, model: str, site: str) -> dict[str, float]:
    return next(r["dice_per_label"] for r in report.results if r["model"] == model and r["test_site"] == site)


def report_markdown(report: DemoReport) -> str:
    settings = report.settings
    sites = list(report.sites)
    by_round: dict[int, dict[str, Mapping[str, Any]]] = {}
    for row in report.rounds:
        by_round.setdefault(row["round"], {})[row["site"]] = row
    round_table = markdown_table(
        ["rounds completed", *sites],
        [[done, *(_cell(rows.get(site, {}).get("global_dice")) for site in sites)]
         for done, rows in sorted(by_round.items())],
    )
    labels = list(_label_dice(report, FEDERATED, sites[0]))
    label_table = markdown_table(
        ["model", "test set", *labels, "mean"],
        [[r["model"], r["test_site"], *(r["dice_per_label"][name] for name in labels), r["dice"]]
         for r in report.results],
    )
    lines = [
        "# Federated cross-modality demo",
        "",
        f"{len(sites)} sites, one modality each: "
        + ", ".join(f"**{site}** ({modality})" for site, modality in report.sites.items())
        + f". Each holds {settings.train_cases} training and {settings.test_cases} held-out test phantoms "
        f"(reference grid {settings.volume_size} px over 400 mm), stored its own way. FedAvg with GIN over "
        f"a real Flower SuperLink and SuperNodes (TLS, 127.0.0.1): {settings.rounds} rounds of "
        f"{settings.local_epochs} local epochs, U-Net "
        f"{'/'.join(map(str, settings.channels))}, plan: {report.plan.describe()}. "
        + ", ".join(f"{stage} {seconds:.0f} s" for stage, seconds in report.seconds.items()) + ".",
        "",
        *_encryption(report),
        *_privacy(report),
        *_storage(report),
        *_plan(report.plan),
        "## The global model's mean Dice on each site's test set",
        "",
        round_table,
        "",
        f"![Dice per round]({ROUND_CHART})",
        "",
        *_round_costs(report.round_summaries),
    ]
    if len(report.models) > 1:
        lines += _comparison(report)
    lines += ["## Dice per label", "", label_table, "", f"![Final Dice per label]({LABEL_CHART})", ""]
    return "\n".join(lines)


def _comparison(report: DemoReport) -> list[str]:
    sites = list(report.sites)
    table = markdown_table(
        ["model", *sites, "mean"],
        [[model, *(report.dice(model, site) for site in sites), report.mean_dice(model)]
         for model in report.models],
    )
    columns = ("global", "personalised", "local_only", "centralized")
    per_site = markdown_table(
        ["site (its own test set)", "global", "personalised", "local-only", "centralized"],
        [[site, *(_cell(row[column]) for column in columns)] for site, row in report.site_table().items()],
    )
    lines = [
        "## Federated against local-only and centralized training",
        "",
        f"Every baseline trains {report.settings.total_epochs} epochs (rounds x local epochs) with the same "
        f"plan, network, augmentation and seed. `{PERSONALISED}` is each site's own model: the final global "
        f"model fine-tuned for {report.settings.personalise_epochs} epochs on the site's data, scored on its "
        "own test set.",
        "",
        table,
        "",
        f"![Dice by model]({MODEL_CHART})",
        "",
        "Each site's models side by side on its own test set:",
        "",
        per_site,
        "",
    ]
    verdict = report.verdict()
    if verdict is not None:
        checks = verdict["checks"]
        changes = {site: values["change"] for site, values in verdict["own_modality"].items()}
        known = {site: change for site, change in changes.items() if change is not None}
        worst = (f"worst {min(known, key=known.__getitem__)} {min(known.values()):+.3f}" if known
                 else "no personalised model")
        lines += [
            "### Verdict",
            "",
            f"- Global mean Dice {verdict['federated_mean_dice']:.3f} is "
            f"{verdict['federated_to_centralized']:.1%} of centralized "
            f"{verdict['centralized_mean_dice']:.3f} "
            f"(target at least {REQUIRED_CENTRALIZED_RATIO:.0%}): {_met(checks['federated_vs_centralized'])}",
            f"- Against the local-only models' mean over every test set "
            f"{verdict['local_only_mean_dice']:.3f} (the gain of training across modalities): "
            f"{_met(checks['federated_above_local_only'])}",
            f"- Own modality, each site's personalised model against its local-only model: {worst} "
            f"(a drop of at most {ALLOWED_OWN_MODALITY_DROP:.2f} allowed): "
            f"{_met(checks['personalised_keeps_own_modality'])}",
            f"- Targets {'met' if verdict['met'] else 'NOT met'}.",
            "",
        ]
    return lines


def _round_costs(summaries: list[RoundSummary]) -> list[str]:
    """The server's per-round table (as `fedseg server status` shows it); nothing without summaries."""
    if not summaries:
        return []
    header, rows = round_table(summaries)
    return ["## What each round cost", "",
            "Wall time from the end of the previous round to the round's checkpoint; the slowest site's own "
            "work (scoring and training, as the site reported it); the overhead between the two (transport, "
            "Flower, the server's validation, averaging and checkpoint). Per site: the server's verdict and "
            "the array KiB in (the site's reply) / out (the round's message to it), packed as they travel. "
            "\"-\": unknown.", "",
            markdown_table(header, rows), ""]


def _storage(report: DemoReport) -> list[str]:
    """How each site stores its studies, as its scanner would."""
    rows = [[site, report.sites[site], FORMAT_NAMES[row["file_format"]], row["orientation"],
             " x ".join(f"{value:g}" for value in row["spacing"]), f"{row['field_of_view_mm']:g}",
             " x ".join(map(str, row["voxels"]))]
            for site, row in report.storage_rows().items()]
    table = markdown_table(["site", "modality", "format", "stored as", "voxel size (mm, x y z)",
                            "field of view (mm)", "voxels (x y z)"], rows)
    return ["## The sites' data", "",
            "Each site stores its phantoms as its scanner would: the same anatomy in its own orientation, "
            "spacing, field of view and file format (labels are NIfTI with their image's geometry).", "",
            table, ""]


def _plan(plan: Plan) -> list[str]:
    """The plan every model followed: made by the federation's server from the sites' fingerprints."""
    x, y, z = plan.target_spacing
    table = markdown_table(["setting", "value"], [
        ["orientation", "RAS (canonical)"],
        ["target spacing (mm, x y z)", f"{x:g} x {y:g} x {z:g}"
                                       + (" (slices as stored)" if plan.spatial_dims == 2 else "")],
        ["patch size (pixels)", " x ".join(map(str, plan.patch_size))],
        ["normalization", plan.normalization],
        ["labels", ", ".join(plan.labels[value] for value in sorted(plan.labels))],
        ["set by hand", ", ".join(plan.overridden) or "nothing (nnU-Net's rules)"],
    ])
    return ["## The plan", "",
            "Made by the federation's server before round 1 from the sites' merged fingerprints (numbers "
            "only): every site's studies are brought to this grid, and the baselines follow it too.", "",
            table, ""]


def _encryption(report: DemoReport) -> list[str]:
    """A paragraph on encrypted aggregation when the run used it."""
    if not report.settings.he:
        return []
    return [f"Masked, homomorphically encrypted aggregation (BFV) with HE key **{report.he_fingerprint}**: "
            "the sites masked and encrypted their updates, the server only added ciphertexts and kept the "
            "global model encrypted; the federated model scored here is the one the sites decrypted.", ""]


def _privacy(report: DemoReport) -> list[str]:
    """A paragraph and a table of the sites' differential privacy when the run used it: epsilon after a
    few rounds spread over the run (report.json has every round)."""
    if not report.settings.dp:
        return []
    spent = ", ".join(f"{site} {value:.2f}" for site, value in report.epsilon.items()) or "none reported"
    lines = [f"Every site trained with DP-SGD (site.toml [privacy] defaults: one training slice is the unit "
             f"of privacy, delta 1e-5). Epsilon spent: {spent}.", ""]
    rounds = sorted({number for pairs in report.epsilon_by_round.values() for number, _ in pairs})
    if not rounds:
        return lines
    step = max(1, -(-len(rounds) // TABLE_ROUNDS))
    shown = sorted({*rounds[::step], rounds[-1]})
    by_site = {site: dict(pairs) for site, pairs in report.epsilon_by_round.items()}
    rows = [[number, *(f"{spent[number]:.2f}" if number in spent else "" for spent in by_site.values())]
            for number in shown]
    return [*lines, markdown_table(["round", *by_site], rows), ""]


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _cell(value: Any) -> Any:
    return "" if value is None else value
