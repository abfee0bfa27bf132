"""One session of the workbench: persisted settings and the models every page shares."""

from __future__ import annotations

from pathlib import Path

from app.models.metrics import FederationMetrics
from app.models.signals import Signal
from app.models.training import TrainingRunModel
from app.models.viewer import ViewerModel
from app.services.settings import SettingsStore


class Workbench:
    """Settings (saved on every change that matters), the viewer model, the local training run and the
    federation's per-site metrics.

    Signals: recent_changed() when the recent studies or datasets change.
    """

    def __init__(self, store: SettingsStore) -> None:
        self.store = store
        self.settings = store.load()
        self.viewer = ViewerModel()
        self.training = TrainingRunModel()
        self.federation_metrics = FederationMetrics()
        self.recent_changed = Signal()

    def remember_study(self, path: Path) -> None:
        self.settings.add_recent_study(path)
        self.save()
        self.recent_changed.emit()

    def remember_dataset(self, path: Path) -> None:
        self.settings.add_recent_dataset(path)
        self.save()
        self.recent_changed.emit()

    def save(self) -> None:
        """Persist the settings; a read-only config folder must not stop the session."""
        try:
            self.store.save(self.settings)
        except OSError as error:
            self.store.problem = f"settings could not be saved to {self.store.path}: {error.strerror}"
