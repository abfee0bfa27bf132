"""How close FedAvg comes to centralized and local-only training on the demo's data, by round length.

The demo's target for the global model (federated >= 0.93 x centralized, and above the local-only models'
mean) depends on how often the sites' models are averaged, not on Flower: this runs FedAvg in
one process (no Flower processes, so no per-round overhead) over the demo's sites, model and plan (made
from the sites' merged fingerprints, as the federation's server makes it), for several plans of rounds x
local epochs with the same total epochs, and the baselines for those epochs as `fedseg demo --baselines`
trains them. Every site keeps its AdamW state between rounds as real sites do;
replies are averaged by Flower's own helper, weighted by num-examples as ValidatingFedAvg does. Every
model is scored on every site's held-out test set. The default plans start with the demo's own
(DemoSettings: 80 rounds of 1 epoch); each site's own-modality target is its personalised model's, which
`fedseg demo --baselines` measures.

Read with bench/federation_round.py: a plan of R rounds costs R times Flower's per-round overhead
(ClientApp process, polling, transport, checkpoint) on top of the same training.

Last line: a JSON object. About 30 minutes on 2 CPU cores with the default plans.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Mapping, Sequence
from functools import reduce
from pathlib import Path
from typing import Any

from flwr.app import Array, ArrayRecord, MetricRecord, RecordDict
from flwr.serverapp.strategy.strategy_utils import aggregate_arrayrecords

from federation.demo import DemoSettings
from federation.demo.baselines import CENTRALIZED, local_only_name, train_baselines
from federation.demo.data import demo_datasets
from federation.demo.federated import write_server_config
from federation.planning import plan_for
from federation.server_run import model_of
from federation.task import NUM_EXAMPLES, load_named_weights, named_weights, site_fingerprint
from segmentation.algorithm import SegmentationAlgorithm
from segmentation.datalist import DatasetIndex
from segmentation.plan import Fingerprint
from segmentation.settings import TrainingConfig

TARGET_RATIO = 0.93
_DEMO = DemoSettings()
DEFAULT_PLANS = f"{_DEMO.rounds}x{_DEMO.local_epochs},40x2,16x5,4x20"  # the demo's plan first


def parse_plan(text: str) -> tuple[int, int]:
    """'16x5' -> (16 rounds, 5 local epochs)."""
    rounds, _, epochs = text.partition("x")
    return int(rounds), int(epochs)


def scores_on_test_sets(
    algorithm: SegmentationAlgorithm, datasets: Mapping[str, DatasetIndex]
) -> dict[str, float]:
    """The model's mean Dice on every site's held-out test set."""
    return {site: algorithm.evaluate(dataset.test).dice for site, dataset in datasets.items()}


def federated_average(
    training: TrainingConfig, datasets: Mapping[str, DatasetIndex], rounds: int, epochs: int,
) -> SegmentationAlgorithm:
    """The global model after `rounds` FedAvg rounds of `epochs` local epochs at every site."""
    global_model = SegmentationAlgorithm(training)
    sites = {site: SegmentationAlgorithm(training) for site in datasets}  # each keeps its AdamW state
    for server_round in range(1, rounds + 1):
        replies = []
        for site, algorithm in sites.items():
            load_named_weights(algorithm, named_weights(global_model))
            algorithm.epoch = (server_round - 1) * epochs  # as the ClientApp counts epochs across rounds
            result = algorithm.train(datasets[site], epochs)
            arrays = ArrayRecord({name: Array(array) for name, array in named_weights(algorithm).items()})
            replies.append(RecordDict({"arrays": arrays,
                                       "metrics": MetricRecord({NUM_EXAMPLES: result.num_examples})}))
        average = aggregate_arrayrecords(replies, NUM_EXAMPLES)
        load_named_weights(global_model, {name: array.numpy() for name, array in average.items()})
        print(f"  round {server_round}/{rounds} averaged", file=sys.stderr, flush=True)
    return global_model


def measure(out: Path, settings: DemoSettings, plans: Sequence[tuple[int, int]]) -> dict[str, Any]:
    datasets = demo_datasets(out / "data", settings)
    config = write_server_config(out / "config", settings, next(iter(datasets.values())).labels)
    fingerprint = reduce(Fingerprint.merge, (site_fingerprint(dataset) for dataset in datasets.values()))
    training = model_of(config, plan_for(fingerprint, config))
    print(f"plan: {training.plan.describe()}", file=sys.stderr, flush=True)
    epochs = {rounds * local for rounds, local in plans}
    if len(epochs) != 1:
        raise SystemExit(f"every plan must train the same total epochs, got {sorted(epochs)}")
    total = epochs.pop()
    rows = []
    for rounds, local in plans:
        model = federated_average(training, datasets, rounds, local)
        rows.append({"model": f"FedAvg {rounds}x{local}", "rounds": rounds, "local_epochs": local,
                     "dice": scores_on_test_sets(model, datasets)})
    baselines = train_baselines(training, datasets, total, out / "events.jsonl")
    rows.append({"model": CENTRALIZED, "rounds": None, "local_epochs": total,
                 "dice": scores_on_test_sets(baselines[CENTRALIZED], datasets)})
    own = {site: baselines[local_only_name(site)].evaluate(dataset.test).dice
           for site, dataset in datasets.items()}
    reference = statistics.fmean(rows[-1]["dice"].values())
    for row in rows:
        row["mean"] = statistics.fmean(row["dice"].values())
        row["ratio"] = row["mean"] / reference
        row["own_modality_loss"] = {site: own[site] - dice for site, dice in row["dice"].items()}
    return {"total_epochs": total, "plan": training.plan.describe(), "sites": list(datasets),
            "local_only": own, "rows": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="work folder (default: a temporary one)")
    parser.add_argument("--plans", default=DEFAULT_PLANS,
                        help=f"comma-separated ROUNDSxEPOCHS, same total epochs (default {DEFAULT_PLANS})")
    args = parser.parse_args()
    plans = [parse_plan(text) for text in args.plans.split(",")]
    with tempfile.TemporaryDirectory(prefix="fedseg-bench-") as temporary:
        result = measure(args.out or Path(temporary), DemoSettings(), plans)
    sites = result["sites"]
    print("test Dice per site (in brackets: against the site's local-only model on its own modality)")
    print(f"{'model':<16}" + "".join(f"{site:>22}" for site in sites) + f"{'mean':>8}{'x central':>11}")
    for row in result["rows"]:
        losses = row["own_modality_loss"]
        dice = "".join(f"{row['dice'][site]:14.3f} ({-losses[site]:+.3f})" for site in sites)
        print(f"{row['model']:<16}{dice}{row['mean']:8.3f}{row['ratio']:11.2f}")
    own = "".join(f"{result['local_only'][site]:22.3f}" for site in sites)
    print(f"{'local-only, own':<16}{own}")
    print(f"target: FedAvg mean Dice >= {TARGET_RATIO:.2f} x centralized ({result['total_epochs']} epochs "
          "each); the own-modality target is the personalised models' (`fedseg demo --baselines`)")
    print(json.dumps({"benchmark": "round_length", **result, "target_ratio": TARGET_RATIO}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
