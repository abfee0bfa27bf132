"""`fedseg plan`: fingerprint one or more dataset folders and write the plan that training would follow.

Each dataset's fingerprint (per case: spacing, size, orientation; per modality: foreground intensities)
is merged as a federation's server merges its sites' (FednnU-Net's FFE), and the plan made from it:
canonical orientation, target spacing, patch size within the memory budget, normalization and labels.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from app.commands.train import DEFAULTS, parse_numbers


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "plan", help="make the training plan (target spacing, patch size) of dataset folders",
        description="Fingerprint dataset folders (numbers only) and write plan.json: canonical orientation "
                    "(RAS), target spacing (nnU-Net's rule), patch size within a memory budget, "
                    "normalization and labels. `fedseg train --plan` follows it.",
    )
    parser.add_argument("--data", required=True, type=Path, action="append",
                        help="dataset folder (repeat for several, e.g. one per site)")
    parser.add_argument("--out", required=True, type=Path, help="plan file to write (plan.json)")
    parser.add_argument("--dim", type=int, choices=(2, 3), default=DEFAULTS["dim"],
                        help="2D slices or 3D patches (default 2)")
    parser.add_argument("--channels", default=DEFAULTS["channels"],
                        help=f"U-Net widths per level (default {DEFAULTS['channels']})")
    parser.add_argument("--batch-size", type=int, default=DEFAULTS["batch_size"],
                        help=f"patches per step, for the memory budget (default {DEFAULTS['batch_size']})")
    parser.add_argument("--memory-budget-mb", type=float,
                        help="training activations one batch may take (default: the plan's budget)")
    parser.add_argument("--spacing", help="target spacing X,Y,Z in mm instead of the automatic one")
    parser.add_argument("--patch-size", help="patch size instead of the automatic one, e.g. 128,128")
    parser.add_argument("--force", action="store_true", help="replace --out if it exists")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from segmentation.datalist import load_dataset
    from segmentation.errors import ConfigError
    from segmentation.fingerprint import fingerprint_cases
    from segmentation.plan import MEMORY_BUDGET_MB, make_plan, write_plan

    if args.out.exists() and not args.force:
        raise ConfigError(f"{args.out} exists; pass --force to replace it or choose another --out")
    channels = parse_numbers(args.channels, "--channels", int, tuple(range(2, 9)))
    budget = args.memory_budget_mb if args.memory_budget_mb is not None else MEMORY_BUDGET_MB
    if budget <= 0 or args.batch_size < 1:
        raise ConfigError("--memory-budget-mb and --batch-size must be positive")
    merged = None
    for folder in args.data:
        dataset = load_dataset(folder)
        fingerprint = fingerprint_cases(dataset.training, dataset.labels)
        codes = sorted({case.orientation for case in fingerprint.cases})
        print(f"{folder}: {len(fingerprint.cases)} labelled cases, {dataset.modality}, "
              f"stored {', '.join(codes)}")
        try:
            merged = fingerprint if merged is None else merged.merge(fingerprint)
        except ConfigError as error:
            raise ConfigError(f"{folder}: {error}") from None
    plan = make_plan(
        merged, args.dim, channels, args.batch_size, budget,
        spacing=parse_numbers(args.spacing, "--spacing", float, (3,)),
        patch_size=parse_numbers(args.patch_size, "--patch-size", int, (args.dim,)),
    )
    write_plan(plan, args.out, fingerprint=merged)
    print(f"plan: {plan.describe()}, {plan.normalization}; wrote {args.out}")
    return 0
