"""The dataset page's state: image/label pairs, their split, the modality, and what checking found.

Rows are checked one by one (on a worker); a row whose files cannot be read carries its problem as a
sentence and the rest of the dataset stays usable.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from app.models.signals import Signal

TRAINING, VALIDATION = "training", "validation"


@dataclass(frozen=True)
class CaseCheck:
    """What reading a pair found: a problem sentence (empty when fine), size (x, y, z), spacing and
    the voxel count of every label value present (0 included)."""

    problem: str = ""
    size: tuple[int, int, int] | None = None
    spacing: tuple[float, float, float] | None = None
    label_voxels: dict[int, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problem


@dataclass(frozen=True)
class CaseRow:
    image: Path
    label: Path | None
    split: str = TRAINING
    check: CaseCheck | None = None  # None until checked


@dataclass(frozen=True)
class DatasetStatistics:
    training: int
    validation: int
    checked: int
    problems: int
    label_share: dict[str, float]  # share of labelled voxels per label name, over readable cases


class DatasetDraft:
    """Signals: changed() after any edit or check result."""

    def __init__(self) -> None:
        self.changed = Signal()
        self.root: Path | None = None
        self.name = "site dataset"
        self.modality = "ct"
        self.labels: dict[int, str] = {0: "background"}
        self.rows: list[CaseRow] = []

    def load(self, root: Path, name: str, modality: str, labels: dict[int, str], rows: list[CaseRow]) -> None:
        self.root, self.name, self.modality, self.labels, self.rows = root, name, modality, dict(labels), rows
        self.changed.emit()

    def add_pairs(self, pairs: list[tuple[Path, Path | None]]) -> None:
        known = {row.image for row in self.rows}
        self.rows.extend(CaseRow(image, label) for image, label in pairs if image not in known)
        self.changed.emit()

    def remove(self, indices: list[int]) -> None:
        self.rows = [row for index, row in enumerate(self.rows) if index not in set(indices)]
        self.changed.emit()

    def set_modality(self, modality: str) -> None:
        self.modality = modality
        self.changed.emit()

    def split(self, validation_share: float) -> None:
        """The last round(n * share) cases (at least one when share > 0 and n > 1) validate."""
        count = len(self.rows)
        validation = round(count * validation_share)
        if validation_share > 0 and count > 1:
            validation = min(max(validation, 1), count - 1)
        self.rows = [replace(row, split=VALIDATION if index >= count - validation else TRAINING)
                     for index, row in enumerate(self.rows)]
        self.changed.emit()

    def set_check(self, index: int, check: CaseCheck) -> None:
        self.rows[index] = replace(self.rows[index], check=check)
        self.changed.emit()

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
