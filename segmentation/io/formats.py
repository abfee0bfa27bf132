"""The file formats the workbench reads and writes, recognised by extension (DICOM also by content)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from segmentation.errors import NotFoundError, UnsupportedFormatError
from segmentation.io.dicom import is_dicom_file


@dataclass(frozen=True)
class FileFormat:
    """A format's display name, its extensions and the SimpleITK ImageIO that handles it (if any)."""

    name: str
    suffixes: tuple[str, ...]
    image_io: str | None = None


SLICER_SEGMENTATION = FileFormat("Slicer segmentation", (".seg.nrrd",))
NIFTI = FileFormat("NIfTI", (".nii.gz", ".nii"), "NiftiImageIO")
NRRD = FileFormat("NRRD", (".nrrd", ".nhdr"), "NrrdImageIO")
METAIMAGE = FileFormat("MetaImage", (".mha", ".mhd"), "MetaImageIO")
DICOM = FileFormat("DICOM", (".dcm", ".dicom", ".ima"))
DICOM_FOLDER = FileFormat("DICOM folder", ())

# Longest suffixes first, so that ".seg.nrrd" wins over ".nrrd".
FILE_FORMATS = (SLICER_SEGMENTATION, NIFTI, NRRD, METAIMAGE, DICOM)
WRITABLE_FORMATS = (SLICER_SEGMENTATION, NIFTI, NRRD, METAIMAGE)


def format_by_suffix(path: Path, formats: tuple[FileFormat, ...] = FILE_FORMATS) -> FileFormat | None:
    """The format whose extension `path` ends with (case-insensitive), if any."""
    name = path.name.lower()
    return next((fmt for fmt in formats if name.endswith(fmt.suffixes)), None)


def detect_format(path: Path) -> FileFormat:
    """The format of an existing file or folder; DICOM files need no extension."""
    if not path.exists():
        raise NotFoundError(f"{path} does not exist")
    if path.is_dir():
        return DICOM_FOLDER
    found = format_by_suffix(path)
    if found is not None:
        return found
    if is_dicom_file(path):
        return DICOM
    raise UnsupportedFormatError(f"{path} is not a format the workbench reads; {supported_formats_text()}")


def supported_formats_text(formats: tuple[FileFormat, ...] = FILE_FORMATS) -> str:
    """'supported: .seg.nrrd, .nii.gz, ...' for error messages."""
    suffixes = ", ".join(suffix for fmt in formats for suffix in fmt.suffixes)
    tail = " and DICOM folders" if DICOM in formats else ""
    return f"supported: {suffixes}{tail}"
