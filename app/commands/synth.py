"""`fedseg synth`: write a demo dataset folder of abdominal phantoms (CT, MR-T1 or MR-T2)."""

from __future__ import annotations

import argparse
from pathlib import Path

MODALITIES = ("ct", "mr-t1", "mr-t2")  # segmentation.synth.SYNTH_MODALITIES, without importing numpy


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value}")
    return value


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth", help="write a demo dataset of abdominal phantoms (MSD-style folder)",
        description="Generate phantom cases (liver, kidneys, spleen, pancreas) as CT, MR-T1 or MR-T2 "
                    "NIfTI image/label pairs with an MSD-style dataset.json. The same seed gives the same "
                    "anatomies in every modality; use one seed per simulated site.",
    )
    parser.add_argument("--out", required=True, type=Path, help="dataset folder to create (must be empty)")
    parser.add_argument("--modality", required=True, choices=MODALITIES, help="appearance of the images")
    parser.add_argument("--cases", required=True, type=_positive, help="number of cases (train + test)")
    parser.add_argument("--seed", required=True, type=int, help="random seed of the anatomies and noise")
    parser.add_argument("--size", type=_positive, default=96, help="in-plane size in pixels (default 96)")
    parser.add_argument("--dim", type=int, choices=(2, 3), default=3,
                        help="3: volumes of size/4 (at least 8) slices; 2: single-slice volumes (default 3)")
    parser.add_argument("--test-fraction", type=_fraction, default=0.2,
                        help="share of the cases written as test cases (default 0.2)")
    parser.add_argument("--overwrite", action="store_true", help="write into a folder that is not empty")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from segmentation.synth import generate_dataset

    index = generate_dataset(
        args.out, args.modality, args.cases, args.seed, size=args.size, dim=args.dim,
        test_fraction=args.test_fraction, progress=True, overwrite=args.overwrite,
    )
    print(f"wrote {len(index.training)} training and {len(index.test)} test cases ({args.modality}) "
          f"to {index.root}")
    return 0
