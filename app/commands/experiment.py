"""`fedseg experiment cross-modality`: the method paper's centralized cross-modality experiment."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from app.commands.train import AUGMENTATION_CHOICES


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "experiment",
        help="run the method paper's experiments on demo data",
        description="Experiments from arXiv 2602.20773 (FedGIN) on the built-in demo phantoms.",
    )
    experiments = parser.add_subparsers(title="experiments", metavar="EXPERIMENT", required=True)
    cross = experiments.add_parser(
        "cross-modality",
        help="train on CT only with each augmentation; test on CT, MR-T1 and MR-T2",
        description="Train one model per augmentation on demo CT only, evaluate it on held-out CT, MR-T1 "
        "and MR-T2 cases, and write report.md, report.json and dice.png into --out.",
    )
    cross.add_argument("--out", required=True, type=Path, help="output folder (created if missing)")
    cross.add_argument(
        "--quick", action="store_true",
        help="shorter training: 40 epochs per model instead of 60 (about 5 min on 2 cores)",
    )
    cross.add_argument(
        "--augmentations",
        default=",".join(AUGMENTATION_CHOICES),
        help="comma-separated subset of: " + ", ".join(AUGMENTATION_CHOICES),
    )
    cross.add_argument("--epochs", type=int, help="epochs per model (default: 40 with --quick, else 60)")
    cross.add_argument("--seed", type=int, default=0, help="seed for data and training (default 0)")
    cross.set_defaults(handler=run_cross_modality_command)


def run_cross_modality_command(args: argparse.Namespace) -> int:
    from app.progress import EventProgressBar
    from segmentation.cross_modality import CrossModalitySettings, report_markdown, run_cross_modality
    from segmentation.errors import ConfigError

    augmentations = tuple(name.strip() for name in args.augmentations.split(",") if name.strip())
    unknown = [name for name in augmentations if name not in AUGMENTATION_CHOICES]
    if unknown or not augmentations:
        raise ConfigError(
            f"--augmentations: unknown {unknown or 'none given'}; choose from "
            + ", ".join(AUGMENTATION_CHOICES)
        )
    if args.epochs is not None and args.epochs < 1:
        raise ConfigError(f"--epochs must be at least 1, got {args.epochs}")
    changes = {"augmentations": augmentations, "seed": args.seed}
    if args.epochs is not None:
        changes["epochs"] = args.epochs
    settings = CrossModalitySettings.quick(**changes) if args.quick else CrossModalitySettings(**changes)

    progress = EventProgressBar()
    report = run_cross_modality(
        args.out,
        settings,
        listeners=(progress,),
        on_stage=lambda stage: print(f"-- {stage}", file=sys.stderr, flush=True),
    )
    progress.close()
    print(report_markdown(report))
    print(f"Report written to {args.out / 'report.md'} (also report.json and dice.png)")
    return 0
