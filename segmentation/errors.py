"""Typed errors with one-line messages meant for the person at the keyboard.

Every error the engine raises on bad input derives from FedSegError; the CLI prints its message
(never a traceback) and exits with status 2, the GUI shows it in a dialog.
"""


class FedSegError(Exception):
    """Base of every user-facing error; str(error) is a complete one-line sentence."""


class StudyReadError(FedSegError):
    """A file or folder could not be read as a study."""


class NotFoundError(StudyReadError):
    """The path does not exist or cannot be opened."""


class EmptyFolderError(StudyReadError):
    """The folder holds no readable image files."""


class NotDicomError(StudyReadError):
    """The file is not DICOM, or is truncated beyond recovery."""


class MissingPixelDataError(StudyReadError):
    """The DICOM object carries no image (e.g. an RT plan or a structured report)."""


class UnsupportedTransferSyntaxError(StudyReadError):
    """The pixel data is compressed and no decoder for it is installed; the message names one."""


class UnsupportedFormatError(StudyReadError):
    """The file's format is not one the workbench reads."""


class SeriesSelectionError(StudyReadError):
    """A folder holds several series and none (or an unknown one) was chosen."""


class SliceGeometryError(StudyReadError):
    """Slices are missing or unevenly spaced along the slice normal."""


class GeometryError(FedSegError):
    """A study's geometry cannot be used: invalid spacing, or too small for any patch."""


class GeometryMismatchError(FedSegError):
    """An image and its label do not share size, spacing, origin or direction."""


class DatasetError(FedSegError):
    """A dataset folder or its dataset.json is missing, malformed or inconsistent."""


class CheckpointError(FedSegError):
    """A model checkpoint is missing, corrupt or of an unknown format."""


class ConfigError(FedSegError):
    """A configuration value is missing or invalid; the message names the key and the reason."""


class PrivacyBudgetError(FedSegError):
    """Training as asked would spend more privacy than the site's budget allows (segmentation.privacy)."""


def first_line(error: BaseException) -> str:
    """The first non-empty line of `error`'s text, or its type name when it has none: the short reason a
    one-line message can carry."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else type(error).__name__
