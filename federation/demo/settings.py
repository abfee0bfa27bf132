"""What the demo federation is: its sites (one per modality), data sizes, model and training budget."""

from __future__ import annotations

from dataclasses import dataclass

from segmentation.errors import ConfigError

# The demo's hospitals: one per modality the phantoms render, each with a display name.
SITE_NAMES = {"ct": "CT Hospital", "mr-t1": "MR-T1 Clinic", "mr-t2": "MR-T2 Clinic"}


@dataclass(frozen=True)
class DemoSettings:
    """One demo run. The defaults fit about 5 minutes on 2 CPU cores (federated part only).

    Every site holds `train_cases` + `test_cases` phantoms of its own modality and anatomy seed; its
    test cases are the held-out set every model is scored on. Baselines train rounds * local_epochs
    epochs with the federation's plan (made from the sites' merged fingerprints), so every model sees the
    same input and gets the same number of passes over the data it sees.
    """

    sites: tuple[str, ...] = ("ct", "mr-t1", "mr-t2")
    rounds: int = 4
    local_epochs: int = 20
    train_cases: int = 24
    test_cases: int = 4
    volume_size: int = 64
    channels: tuple[int, ...] = (16, 32, 64, 128)
    batch_size: int = 16
    learning_rate: float = 2e-3
    augmentation_probability: float = 1.0  # GIN on every sample: less drift between single-modality sites
    round_timeout: float = 900.0  # rounds are long by design (see bench/federation_round.py)
    seed: int = 0
    he: bool = False  # homomorphically encrypted aggregation (CKKS keys made once into the demo folder)

    def __post_init__(self) -> None:
        unknown = [site for site in self.sites if site not in SITE_NAMES]
        if unknown or not self.sites:
            raise ConfigError(f"demo sites must be some of {', '.join(SITE_NAMES)}, got "
                              f"{', '.join(unknown) or 'none'}")
        if len(set(self.sites)) < len(self.sites):
            raise ConfigError(f"each demo modality can have one site only, got {', '.join(self.sites)}")
        for name in ("rounds", "local_epochs", "train_cases", "test_cases"):
            value = getattr(self, name)
            if value < 1:
                raise ConfigError(f"demo {name.replace('_', ' ')} must be at least 1, got {value}")

    @property
    def total_epochs(self) -> int:
        """Epochs every site trains over the run, and what the baselines train."""
        return self.rounds * self.local_epochs

    def site_name(self, modality: str) -> str:
        return SITE_NAMES[modality]
