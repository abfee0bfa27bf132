"""`fedseg synth`: write a demo dataset folder of abdominal phantoms (CT, MR-T1 or MR-T2)."""

from __future__ import annotations

import argparse
from pathlib import Path

MODALITIES = ("ct", "mr-t1", "mr-t2")  # segmentation.synth.SYNTH_MODALITIES, without importing numpy
FILE_FORMATS = ("nifti", "dicom")  # segmentation.synth.FILE_FORMATS, likewise


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
                    "image/label pairs with an MSD-style dataset.json. The same seed gives the same "
                    "anatomies in every modality; use one seed per simulated site. --orientation, "
                    "--spacing, --fov and --format make a site's studies look like its scanner's: the "
                    "same body in the same physical place, on another grid, stored along other axes, "
                    "as NIfTI files or DICOM series folders (labels are NIfTI either way).",
    )
    parser.add_argument("--out", required=True, type=Path, help="dataset folder to create (must be empty)")
    parser.add_argument("--modality", required=True, choices=MODALITIES, help="appearance of the images")
    parser.add_argument("--cases", required=True, type=_positive, help="number of cases (train + test)")
    parser.add_argument("--seed", required=True, type=int, help="random seed of the anatomies and noise")
    parser.add_argument("--size", type=_positive, default=96,
                        help="in-plane pixels across 400 mm when no --spacing is given (default 96)")
    parser.add_argument("--dim", type=int, choices=(2, 3), default=3,
                        help="3: volumes over 200 mm, of size/4 (at least 8) slices without --spacing; "
                             "2: single axial slices (default 3)")
    parser.add_argument("--test-fraction", type=_fraction, default=0.2,
                        help="share of the cases written as test cases (default 0.2)")
    parser.add_argument("--orientation", default="LPS", metavar="CODE",
                        help="storage axes as a 3-letter DICOM orientation code: LPS (default; identity "
                             "direction), RAS, PIR (sagittal slices), LIP (coronal slices), ...")
    parser.add_argument("--spacing", metavar="X,Y,Z",
                        help="voxel size in mm, e.g. 0.8,0.8,2.5 (default: 400 mm / size in-plane, "
                             "200 mm / slices along z; Z is the slice thickness in 2D)")
    parser.add_argument("--fov", type=float, default=400.0, metavar="MM",
                        help="in-plane field of view in mm, 100 to 1000; a wider one adds surroundings "
                             "around the same body (default 400)")
    parser.add_argument("--format", dest="file_format", choices=FILE_FORMATS, default="nifti",
                        help="images as NIfTI files or as DICOM series folders, one file per slice "
                             "(default nifti)")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a folder that is not empty (its case folders are emptied first)")
    parser.set_defaults(handler=run)


def _spacing(text: str | None) -> tuple[float, float, float] | None:
    """'0.8,0.8,2.5' -> (0.8, 0.8, 2.5); ConfigError (one line, exit 2) for anything else."""
    from segmentation.errors import ConfigError

    if text is None:
        return None
    try:
        x, y, z = (float(part) for part in text.split(","))
    except ValueError:  # not three parts, or one that is not a number
        message = f"--spacing needs three sizes in mm, X,Y,Z (e.g. 0.8,0.8,2.5), got {text!r}"
        raise ConfigError(message) from None
    return x, y, z


def run(args: argparse.Namespace) -> int:
    from segmentation.synth import PhantomGeometry, generate_dataset

    geometry = PhantomGeometry(orientation=args.orientation, spacing=_spacing(args.spacing),
                               field_of_view_mm=args.fov, file_format=args.file_format)
    index = generate_dataset(
        args.out, args.modality, args.cases, args.seed, size=args.size, dim=args.dim,
        test_fraction=args.test_fraction, progress=True, overwrite=args.overwrite, geometry=geometry,
    )
    print(f"wrote {len(index.training)} training and {len(index.test)} test cases ({args.modality}) "
          f"to {index.root}")
    return 0
