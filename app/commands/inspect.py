"""`fedseg inspect PATH`: what a study file, DICOM-SEG, DICOM folder or dataset folder holds, as aligned
text or JSON.

Shows technical fields only (series, geometry, modality, values, labels, warnings), never patient
identity. A dataset folder (one with a dataset.json) is checked case by case, as training reads it.
Exit status 0 when everything found is readable, 2 otherwise.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

EXIT_UNREADABLE = 2
KEY_WIDTH = 13


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "inspect",
        help="show what a study file, DICOM folder or dataset folder holds (series, geometry, labels)",
        description="Read a NIfTI/NRRD/Slicer/MetaImage file, a DICOM file or DICOM-SEG, every series of a "
                    "DICOM folder, or every case of a dataset folder (one with a dataset.json), and print "
                    "its technical fields. Exits with 2 if something is unreadable.",
    )
    parser.add_argument("path", help="study file, DICOM folder or dataset folder")
    parser.add_argument("--series", metavar="UID", help="inspect only this series of a DICOM folder")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from segmentation.datalist import DATASET_JSON
    from segmentation.io.summary import summarize

    if (Path(args.path) / DATASET_JSON).is_file():
        return _run_dataset(args)
    format_name, summaries = summarize(args.path, args.series)
    if args.json:
        report = {"path": str(args.path), "format": format_name, "volumes": [s.to_dict() for s in summaries]}
        print(json.dumps(report, indent=2))
    else:
        print(format_report(str(args.path), format_name, summaries))
    failed = [summary for summary in summaries if summary.error]
    for summary in failed:
        print(f"fedseg: error: {summary.error}", file=sys.stderr)
    return EXIT_UNREADABLE if failed else 0


def format_report(path: str, format_name: str, summaries: list) -> str:
    """Aligned key/value blocks, one per volume (per series for DICOM)."""
    is_series = summaries[0].series_uid is not None
    count = f", {len(summaries)} image series" if is_series else ""
    lines = [f"{path}: {format_name}{count}"]
    for index, summary in enumerate(summaries, start=1):
        if is_series:
            lines += ["", f"series {index} of {len(summaries)}"]
        lines += _aligned(_fields(summary))
    return "\n".join(lines)


def _aligned(fields: list[tuple[str, str]]) -> list[str]:
    """'  key          value' lines; a value's further lines are indented under its first."""
    lines = []
    for key, value in fields:
        first, *rest = value.splitlines() or [""]
        lines.append(f"  {key:<{KEY_WIDTH}}{first}")
        lines += [f"  {'':<{KEY_WIDTH}}{line}" for line in rest]
    return lines


def _run_dataset(args: argparse.Namespace) -> int:
    from segmentation.errors import ConfigError
    from segmentation.io.summary import summarize_dataset

    if args.series:
        raise ConfigError(f"{args.path} is a dataset folder: its dataset.json names each case's series, so "
                          "--series does not apply")
    summary = summarize_dataset(args.path)
    if args.json:
        print(json.dumps({"path": str(args.path), "format": "dataset", **summary.to_dict()}, indent=2))
    else:
        print(format_dataset_report(str(args.path), summary))
    failed = [case for case in summary.cases if case.error]
    for case in failed:
        print(f"fedseg: error: case {case.case_id}: {case.error}", file=sys.stderr)
    return EXIT_UNREADABLE if failed else 0


def format_dataset_report(path: str, summary) -> str:
    """The dataset's name, modality and labels, then a block per case: its image, label and geometry."""
    counts = {split: sum(case.split == split for case in summary.cases) for split in ("training", "test")}
    lines = [f"{path}: dataset '{summary.name}' ({summary.modality}), {counts['training']} training and "
             f"{counts['test']} test case(s)", *_aligned([("labels", _names(summary.labels))])]
    for case in summary.cases:
        lines += ["", f"case {case.case_id} ({case.split})", *_aligned(_case_fields(case))]
    return "\n".join(lines)


def _case_fields(case) -> list[tuple[str, str]]:
    image, label = case.image, case.label
    fields = [("image", f"{image.source} ({image.format})")]
    if image.series_uid:
        fields.append(("series UID", image.series_uid))
    if label is not None:
        fields.append(("label", f"{label.source} ({label.format}): {_names(label.labels) or 'no labels'}"))
    if image.size is not None:
        fields += [(key, value) for key, value in _fields(image) if key in ("modality", "size", "spacing",
                                                                           "stored as")]
        warnings = image.warnings + (label.warnings if label else ())
        fields.append(("warnings", "\n".join(warnings) or "none"))
    return fields + ([("error", case.error)] if case.error else [])


def _names(labels: dict[int, str]) -> str:
    return ", ".join(f"{value}: {name}" for value, name in labels.items())


def _storage(orientation: str) -> str:
    """'PIR (axes toward posterior, inferior, right)', or what an oblique study goes through."""
    if orientation == "oblique":
        return "oblique axes (resampled onto the canonical RAS grid for the network)"
    words = {"R": "right", "L": "left", "A": "anterior", "P": "posterior", "S": "superior", "I": "inferior"}
    return f"{orientation} (axes toward {', '.join(words[letter] for letter in orientation)})"


def _fields(summary) -> list[tuple[str, str]]:
    fields = []
    if summary.series_uid is not None:
        fields += [("series UID", summary.series_uid), ("description", summary.description or "-"),
                   ("slices", str(summary.num_slices))]
    fields.append(("modality", summary.modality))
    if summary.error:
        return fields + [("error", summary.error)]
    low, high = summary.value_range or (0.0, 0.0)
    fields += [
        ("size", " x ".join(map(str, summary.size)) + " voxels (x, y, z)"),
        ("spacing", " x ".join(f"{v:.4g}" for v in summary.spacing) + " mm"),
        ("stored as", _storage(summary.orientation)),
        ("values", f"{low:g} to {high:g} ({summary.dtype})"),
    ]
    if summary.labels:
        fields.append(("labels", "\n".join(f"{value}: {name}" for value, name in summary.labels.items())))
    fields.append(("warnings", "\n".join(summary.warnings) or "none"))
    return fields
