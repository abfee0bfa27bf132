"""The dataset page's state: image/label pairs, their split, the modality, and what checking found.

Rows are checked one by one (on a worker); a row whose files cannot be read carries its problem as a
sentence and the rest of the dataset stays usable. The draft remembers the folder it came from and
whether it holds edits that are not on disk yet, so nothing is replaced or dropped without asking.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from app.models.signals import Signal
from app.models.study import MODALITY_CAPTIONS

TRAINING, VALIDATION = "training", "validation"
DEFAULT_NAME = "site dataset"
DEFAULT_LABELS = {0: "background"}


@dataclass(frozen=True)
class CaseCheck:
    """What reading a pair found: a problem sentence (empty when fine), size (x, y, z), spacing, the
    voxel count of every label value present (0 included) and the modality the image file states
    ("unknown" for formats that do not say, such as NIfTI)."""

    problem: str = ""
    size: tuple[int, int, int] | None = None
    spacing: tuple[float, float, float] | None = None
    label_voxels: dict[int, int] = field(default_factory=dict)
    modality: str = "unknown"
    label_names: dict[int, str] = field(default_factory=dict)  # what the label file calls its values

    @property
    def ok(self) -> bool:
        return not self.problem


@dataclass(frozen=True)
class CaseRow:
    """A case: an image file or DICOM series folder (`series_uid` picks one series of a folder that
    holds several), its label file, its split and what checking it found."""

    image: Path
    label: Path | None
    split: str = TRAINING
    check: CaseCheck | None = None  # None until checked
    series_uid: str | None = None

    @property
    def key(self) -> tuple[Path, str | None]:
        """What makes two rows the same case: the image and, in a folder of several series, the series."""
        return self.image, self.series_uid


@dataclass(frozen=True)
class DatasetStatistics:
    training: int
    validation: int
    checked: int
    problems: int
    label_share: dict[str, float]  # share of labelled voxels per label name, over readable cases


def modality_warning(tag: str, found: str) -> str:
    """A sentence when an image states another kind of modality (CT against MR) than the dataset's
    tag; empty when they agree or either is unknown (MR sequences count as MR)."""
    if "unknown" in (tag, found) or _family(tag) == _family(found):
        return ""
    return (f"looks like {MODALITY_CAPTIONS.get(found, found)} but the dataset is tagged "
            f"{MODALITY_CAPTIONS.get(tag, tag)}")


def _family(tag: str) -> str:
    return "mr" if tag.startswith("mr") else tag


class DatasetDraft:
    """Signals: changed() after any edit, check result, load or save.

    `root` is the folder the draft was opened from or last saved to (None for a new draft); `dirty`
    is True after an edit that is not saved yet (checking a case is not an edit).
    """

    def __init__(self) -> None:
        self.changed = Signal()
        self.root: Path | None = None
        self.name = DEFAULT_NAME
        self.modality = "ct"
        self.labels: dict[int, str] = dict(DEFAULT_LABELS)
        self.rows: list[CaseRow] = []
        self.dirty = False
        self.adopts_labels = True  # a new draft names its labels after its label files; an opened one not

    @property
    def has_unsaved_changes(self) -> bool:
        """Whether replacing the draft would lose work: edits not on disk and something to save."""
        return self.dirty and bool(self.rows)

    # -- whole drafts --------------------------------------------------------------------------
    def reset(self) -> None:
        """A new, empty draft that belongs to no folder; it takes its labels from its label files."""
        self.load(None, DEFAULT_NAME, "ct", DEFAULT_LABELS, [])
        self.adopts_labels = True

    def load(self, root: Path | None, name: str, modality: str, labels: dict[int, str],
             rows: list[CaseRow]) -> None:
        self.root, self.name, self.modality, self.labels, self.rows = root, name, modality, dict(labels), rows
        self.dirty = False
        self.adopts_labels = False  # a dataset.json names its labels: other values are problems
        self.changed.emit()

    def mark_saved(self, root: Path) -> None:
        """The draft is now what root/dataset.json holds."""
        self.root, self.dirty = root, False
        self.changed.emit()

    # -- edits ---------------------------------------------------------------------------------
    def add_pairs(self, pairs: list[tuple[Path, Path | None]]) -> None:
        self.add_cases([CaseRow(image, label) for image, label in pairs])

    def add_cases(self, rows: list[CaseRow]) -> None:
        """Append the rows whose case is not in the draft yet."""
        known = {row.key for row in self.rows}
        new = []
        for row in rows:
            if row.key not in known:
                known.add(row.key)
                new.append(row)
        if new:
            self.rows.extend(new)
            self._edited()

    def remove(self, indices: list[int]) -> None:
        dropped = set(indices)
        kept = [row for index, row in enumerate(self.rows) if index not in dropped]
        if len(kept) != len(self.rows):
            self.rows = kept
            self._edited()

    def set_name(self, name: str) -> None:
        if name != self.name:
            self.name = name
            self._edited()

    def set_modality(self, modality: str) -> None:
        if modality != self.modality:
            self.modality = modality
            self._edited()

    def set_labels(self, labels: dict[int, str]) -> None:
        if labels != self.labels:
            self.labels = dict(labels)
            self._edited()

    def split(self, validation_share: float) -> None:
        """The last round(n * share) cases (at least one when share > 0 and n > 1) validate."""
        count = len(self.rows)
        validation = round(count * validation_share)
        if validation_share > 0 and count > 1:
            validation = min(max(validation, 1), count - 1)
        rows = [replace(row, split=VALIDATION if index >= count - validation else TRAINING)
                for index, row in enumerate(self.rows)]
        if rows != self.rows:
            self.rows = rows
            self._edited()

    def set_check(self, index: int, check: CaseCheck) -> None:
        """A row's check; a new draft also takes the label values (and names) its label files bring."""
        self.rows[index] = replace(self.rows[index], check=check)
        new = {value: name for value, name in check.label_names.items() if value not in self.labels}
        if self.adopts_labels and new:
            self.labels = dict(sorted({**self.labels, **new}.items()))
            self.dirty = True
        self.changed.emit()

    def _edited(self) -> None:
        self.dirty = True
        self.changed.emit()

    # -- reading -------------------------------------------------------------------------------
    def check_text(self, row: CaseRow) -> str:
        """The Check column: the problem, else a modality warning, else OK ("checking…" until read)."""
        if row.check is None:
            return "checking…"
        return row.check.problem or modality_warning(self.modality, row.check.modality) or "OK"

    def statistics(self) -> DatasetStatistics:
        checked = [row.check for row in self.rows if row.check is not None]
        readable = [check for check in checked if check.ok]
        totals: dict[int, int] = {}
        for check in readable:
            for value, count in check.label_voxels.items():
                if value != 0:
                    totals[value] = totals.get(value, 0) + count
        labelled = sum(totals.values())
        share = {self.labels.get(value, f"label {value}"): count / labelled
                 for value, count in sorted(totals.items())} if labelled else {}
        return DatasetStatistics(
            training=sum(row.split == TRAINING for row in self.rows),
            validation=sum(row.split == VALIDATION for row in self.rows),
            checked=len(checked), problems=sum(not check.ok for check in checked), label_share=share,
        )
