"""`fedseg predict`: segment one study with a trained model, report label volumes, export the mask.

The mask keeps the study's geometry. --out writes NIfTI/NRRD/MetaImage/Slicer by extension;
--dicom-seg writes a DICOM-SEG that references the source series, so it needs DICOM input.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="segment one study with a trained model and export the mask",
        description="Segment one study with a trained model, print each label's volume in mL and "
                    "write the mask (--out and/or --dicom-seg; at least one).",
    )
    parser.add_argument("--model", required=True, type=Path, metavar="CKPT", help="checkpoint (model.pt)")
    parser.add_argument("--input", required=True, type=Path, metavar="PATH",
                        help="DICOM folder or file, NIfTI, NRRD or MetaImage image")
    parser.add_argument("--series", metavar="UID", help="the series to segment when a folder holds several")
    parser.add_argument("--allow-irregular", action="store_true",
                        help="accept a DICOM series with missing slices or uneven spacing")
    parser.add_argument("--out", type=Path, metavar="MASK",
                        help="mask file: .nii.gz, .nii, .nrrd, .mha or .seg.nrrd (keeps label names)")
    parser.add_argument("--dicom-seg", type=Path, metavar="SEG", help="DICOM-SEG file (DICOM input only)")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when present, else cpu")
    parser.add_argument("--batch-size", type=int, default=16, metavar="N",
                        help="slices, and sliding windows, per forward pass (default 16)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from segmentation.checkpoint import load_checkpoint
    from segmentation.export import write_dicom_seg
    from segmentation.inference import label_volumes_ml
    from segmentation.io import write_volume

    _check_options(args)
    checkpoint = load_checkpoint(args.model)
    volume, datasets = _read_input(args)
    mask = _predict_with_progress(checkpoint, volume, args)
    for name, millilitres in label_volumes_ml(mask).items():
        print(f"{name}: {millilitres:.2f} mL")
    if args.out is not None:
        print(f"wrote mask to {write_volume(mask, args.out)}")
    if args.dicom_seg is not None:
        print(f"wrote DICOM-SEG to {write_dicom_seg(mask, datasets, args.dicom_seg)}")
    return 0


def _check_options(args: argparse.Namespace) -> None:
    """Refuse unusable options before minutes of inference are spent."""
    import torch

    from segmentation.errors import ConfigError
    from segmentation.io.formats import WRITABLE_FORMATS, format_by_suffix, supported_formats_text

    if args.out is None and args.dicom_seg is None:
        raise ConfigError("say where to write the mask: --out mask.nii.gz and/or --dicom-seg seg.dcm")
    if args.out is not None and format_by_suffix(args.out, WRITABLE_FORMATS) is None:
        supported = supported_formats_text(WRITABLE_FORMATS)
        raise ConfigError(f"--out {args.out}: unknown mask format; {supported}")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("--device cuda: no CUDA device is available here")


def _read_input(args: argparse.Namespace):
    """The volume to segment and, for DICOM input, its source datasets (a DICOM-SEG references them)."""
    from segmentation.errors import ConfigError
    from segmentation.io import read_volume
    from segmentation.io.dicom import read_dicom_series
    from segmentation.io.formats import DICOM, DICOM_FOLDER, detect_format

    fmt = detect_format(args.input)
    if fmt in (DICOM, DICOM_FOLDER):
        series = read_dicom_series(args.input, series_uid=args.series, allow_irregular=args.allow_irregular)
        return series.volume, series.datasets
    if args.dicom_seg is not None:
        raise ConfigError(f"{args.input} is a {fmt.name} file: "
                          "DICOM-SEG needs a DICOM source series; use --out mask.nii.gz")
    return read_volume(args.input, series_uid=args.series), None


def _predict_with_progress(checkpoint, volume, args: argparse.Namespace):
    """predict_volume with a progress bar on stderr (canonical slices for 2D models), once the study is
    known to fit the checkpoint's plan."""
    from tqdm import tqdm

    from segmentation.inference import predict_volume
    from segmentation.preprocessing import check_study

    grid = check_study(volume, checkpoint.plan, str(args.input))
    slices = checkpoint.network.spatial_dims == 2
    total, unit = (grid.size[2], "slice") if slices else (1, "volume")
    with tqdm(total=total, desc="predicting", unit=unit, file=sys.stderr, dynamic_ncols=True) as bar:
        return predict_volume(checkpoint, volume, device=args.device, batch_size=args.batch_size,
                              progress=lambda done, _total: bar.update(done - bar.n))
