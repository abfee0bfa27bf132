"""`fedseg evaluate`: per-case and mean per-label Dice and HD95 of a checkpoint on a dataset folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate", help="score a trained model (Dice, HD95) on a dataset folder",
        description="Segment every labelled case of a dataset folder with a checkpoint and report "
                    "per-case and mean per-label Dice and 95th-percentile Hausdorff distance (mm).",
    )
    parser.add_argument("--model", required=True, type=Path, help="checkpoint (model.pt) to evaluate")
    parser.add_argument("--data", required=True, type=Path, help="MSD-style dataset folder")
    parser.add_argument("--split", choices=("test", "training", "all"), default="test",
                        help="which cases to score (default test)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from segmentation.algorithm import SegmentationAlgorithm
    from segmentation.checkpoint import load_checkpoint
    from segmentation.datalist import load_dataset
    from segmentation.errors import DatasetError

    checkpoint = load_checkpoint(args.model)
    dataset = load_dataset(args.data)
    if dataset.labels != checkpoint.labels:
        raise DatasetError(
            f"{args.data} has labels {dataset.labels} but the model predicts {checkpoint.labels}"
        )
    splits = {"test": dataset.test, "training": dataset.training, "all": dataset.training + dataset.test}
    cases = [case for case in splits[args.split] if case.label is not None]
    if not cases:
        raise DatasetError(f"{args.data} has no labelled cases in the {args.split} split")
    result = SegmentationAlgorithm.from_checkpoint(checkpoint).evaluate(cases)
    if args.json:
        print(json.dumps(_as_json(args, result), indent=2))
    else:
        print(_table("Dice", result, "dice", "{:.3f}"))
        print()
        print(_table("HD95 (mm)", result, "hd95", "{:.1f}"))
    return 0


def _as_json(args: argparse.Namespace, result) -> dict:
    return {
        "model": str(args.model), "data": str(args.data), "split": args.split,
        "cases": [{"case_id": case.case_id, "dice": case.dice, "hd95": case.hd95} for case in result.cases],
        "mean": {"dice": result.label_dice, "hd95": result.label_hd95},
        "dice": result.dice, "hd95": result.hd95,
    }


def _table(title: str, result, metric: str, number: str) -> str:
    """One row per case plus a mean row; one column per label plus the mean over labels."""
    names = list(getattr(result, f"label_{metric}"))
    rows = [(case.case_id, [getattr(case, metric)[name] for name in names]) for case in result.cases]
    rows.append(("mean", [getattr(result, f"label_{metric}")[name] for name in names]))
    header = [title, *names, "mean"]
    body = [[case_id, *(number.format(v) for v in values), number.format(sum(values) / len(values))]
            for case_id, values in rows]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]
    align = [str.ljust] + [str.rjust] * (len(header) - 1)
    lines = ["  ".join(align[i](cell, widths[i]) for i, cell in enumerate(row)) for row in [header, *body]]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return "\n".join(lines)
