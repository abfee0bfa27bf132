"""`fedseg export KIND ...`: hand a trained model to other tools, one sub-command per kind.

`fedseg export bundle --model CKPT --out DIR` writes a MONAI bundle (configs/metadata.json,
configs/inference.json, models/model.pt) that MONAI's bundle runner segments studies with as
`fedseg predict` does.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a trained model for other tools (a MONAI bundle)",
        description="Export a trained model for other tools.",
    )
    kinds = parser.add_subparsers(title="kinds", metavar="KIND", required=True)
    bundle = kinds.add_parser(
        "bundle",
        help="a MONAI bundle that MONAI's bundle runner segments studies with",
        description="Write a MONAI bundle: configs/metadata.json (labels, plan), configs/inference.json "
                    "and models/model.pt. Run it with `python -m monai.bundle run --config_file "
                    "DIR/configs/inference.json --bundle_root DIR --dataset_dir STUDIES` (masks go to "
                    "DIR/eval, or --output_dir); that needs fedseg, nibabel and fire installed. Refuses a "
                    "folder that is not empty unless --overwrite.",
    )
    bundle.add_argument("--model", required=True, type=Path, metavar="CKPT", help="checkpoint (model.pt)")
    bundle.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="folder to write the bundle into")
    bundle.add_argument("--overwrite", action="store_true",
                        help="replace the bundle's files in a folder that is not empty (others stay)")
    bundle.set_defaults(handler=run_bundle)


def run_bundle(args: argparse.Namespace) -> int:
    from segmentation.bundle import export_bundle

    print(f"wrote MONAI bundle to {export_bundle(args.model, args.out, overwrite=args.overwrite)}")
    return 0
