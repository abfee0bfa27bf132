"""`fedseg demo` end to end: data, the federated run, optional baselines, scores and the report."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from federation.demo.baselines import train_baselines
from federation.demo.data import demo_datasets
from federation.demo.federated import EventCallback, final_model_file, run_federation, site_model_file
from federation.demo.report import (
    FEDERATED,
    PERSONALISED,
    DemoReport,
    result_row,
    round_rows,
    write_report,
)
from federation.demo.settings import DemoSettings
from federation.round_costs import round_summaries
from federation.server_run import EVENTS_NAME, METRICS_NAME, model_of, read_metrics
from segmentation.algorithm import SegmentationAlgorithm
from segmentation.checkpoint import load_checkpoint
from segmentation.errors import ConfigError
from segmentation.events import Listener, read_events
from segmentation.plan import read_plan
from segmentation.settings import PERSONALISED_MODEL_NAME, PLAN_NAME, epsilon_by_round


def run_demo(
    out: Path,
    settings: DemoSettings,
    baselines: bool = False,
    on_event: EventCallback = lambda event: None,
    listeners: Sequence[Listener] = (),
    on_stage: Callable[[str], None] = lambda stage: None,
    join_site: str | None = None,
) -> DemoReport:
    """Make (or reuse) the sites' data under out/data, run the federation under out/federation (with
    settings.he encrypted, with keys made once into out/federation/he), train the baselines when asked
    (events in out/baselines/events.jsonl), score every model on every site's test set and write the
    report into `out`. The baselines follow the plan the federation's server made from the sites'
    fingerprints (run_dir/plan.json), which the report shows.

    on_event gets the server's events (per-site rows, checkpoints); listeners the baselines' events.
    join_site (a modality of settings.sites) is left to an outside SuperNode (see run_federation).
    """
    if join_site is not None and join_site not in settings.sites:
        raise ConfigError(f"the joining site must be one of the demo's sites ({', '.join(settings.sites)}), "
                          f"got {join_site}")
    seconds: dict[str, float] = {}
    started = time.monotonic()
    on_stage("making the sites' demo data (reused when present)")
    datasets = demo_datasets(out / "data", settings)
    seconds["data"] = time.monotonic() - started

    started = time.monotonic()
    started_here = len(datasets) - (join_site is not None)
    joining = f", the {join_site} site joins from outside" if join_site is not None else ""
    on_stage(f"federated run: a SuperLink and {started_here} SuperNode(s) on 127.0.0.1{joining} "
             f"(TLS{', homomorphically encrypted aggregation' if settings.he else ''})")
    config = run_federation(out / "federation", settings, datasets, on_event, join_site, on_stage)
    seconds["federated"] = time.monotonic() - started
    plan = read_plan(config.run_dir / PLAN_NAME)
    federated = load_checkpoint(final_model_file(out / "federation", config, datasets))
    models = {FEDERATED: SegmentationAlgorithm.from_checkpoint(federated)}

    if baselines:
        started = time.monotonic()
        on_stage(f"baselines: local-only per site and centralized, {settings.total_epochs} epochs each, "
                 f"with the federation's plan ({plan.describe()})")
        training = model_of(config, plan)
        models.update(train_baselines(training, datasets, settings.total_epochs,
                                      out / "baselines" / "events.jsonl", listeners))
        seconds["baselines"] = time.monotonic() - started

    started = time.monotonic()
    on_stage("scoring every model on every site's test set")
    records = read_metrics(config.run_dir / METRICS_NAME)
    report = DemoReport(settings, {site: dataset.modality for site, dataset in datasets.items()},
                        rounds=round_rows(records),
                        round_summaries=round_summaries(read_events(config.run_dir / EVENTS_NAME)),
                        he_fingerprint=config.he.fingerprint, plan=plan,
                        epsilon_by_round=epsilon_by_round(records))
    for model, algorithm in models.items():
        report.results += [result_row(model, site, algorithm.evaluate(dataset.test))
                           for site, dataset in datasets.items()]
    personalised = {site: site_model_file(out / "federation", site, PERSONALISED_MODEL_NAME)
                    for site in datasets}
    if settings.personalise_epochs and all(path.is_file() for path in personalised.values()):
        report.results += [  # each site's own model, for its own scanner: its own test set only
            result_row(PERSONALISED, site, SegmentationAlgorithm.from_checkpoint(load_checkpoint(path))
                       .evaluate(datasets[site].test))
            for site, path in personalised.items()]
    seconds["scoring"] = time.monotonic() - started
    report.seconds = seconds
    write_report(report, out)
    return report
