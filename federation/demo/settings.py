"""What the demo federation is: its sites (one per modality) and how each stores its studies, data sizes,
model and training budget."""

from __future__ import annotations

from dataclasses import dataclass

from segmentation.errors import ConfigError
from segmentation.synth.dataset import phantom_depth
from segmentation.synth.scan import CRANIOCAUDAL_MM, FIELD_OF_VIEW_MM, MIN_PIXELS, PhantomGeometry

# The demo's hospitals: one per modality the phantoms render, each with a display name.
SITE_NAMES = {"ct": "CT Hospital", "mr-t1": "MR-T1 Clinic", "mr-t2": "MR-T2 Clinic"}
VOLUME_SIZE_RANGE = (16, 512)  # what the phantoms render (segmentation.synth.generate_dataset)


@dataclass(frozen=True)
class SiteStorage:
    """How a demo site's scanner stores its studies, relative to the demo's reference grid
    (`volume_size` pixels across 400 mm in-plane, `volume_size / 4` slices, at least 8, across 200 mm).

    pixel_scale and slice_scale multiply the reference pixel and slice; field_of_view_mm is the in-plane
    extent. A pixel is never coarser than field_of_view_mm / 16 (the phantoms' minimum of 16 pixels
    in-plane), so small test settings (volume_size 16) still render: there a coarser site clamps to
    16 pixels.
    """

    orientation: str = "LPS"
    pixel_scale: float = 1.0
    slice_scale: float = 1.0
    field_of_view_mm: float = FIELD_OF_VIEW_MM
    file_format: str = "nifti"

    def geometry(self, volume_size: int) -> PhantomGeometry:
        """The site's phantom geometry at `volume_size` (spacings rounded to 1 um)."""
        pixel = min(self.pixel_scale * FIELD_OF_VIEW_MM / volume_size, self.field_of_view_mm / MIN_PIXELS)
        slice_thickness = self.slice_scale * CRANIOCAUDAL_MM / phantom_depth(volume_size, 3)
        spacing = (round(pixel, 6), round(pixel, 6), round(slice_thickness, 6))
        return PhantomGeometry(self.orientation, spacing, self.field_of_view_mm, self.file_format)


# Each site stores its phantoms as its scanner would (issue 12): the CT hospital as a DICOM series (LPS,
# the DICOM convention) with finer pixels, one MR clinic as NIfTI in sagittal slices (PIR) with coarser
# pixels, the other as NIfTI (RAS, the NIfTI tools' convention) with thick slices over a wider field of
# view. The server's plan takes the median of each: the reference pixel and a 400 mm field of view.
SITE_STORAGE = {
    "ct": SiteStorage("LPS", pixel_scale=0.8, file_format="dicom"),
    "mr-t1": SiteStorage("PIR", pixel_scale=1.25),
    "mr-t2": SiteStorage("RAS", slice_scale=1.6, field_of_view_mm=480.0),
}


@dataclass(frozen=True)
class DemoSettings:
    """One demo run. The defaults reach the centralized model's Dice (>= 0.93x) in about 5 minutes on 2
    CPU cores (federated part only): 80 rounds of 1 epoch, since FedAvg's sites drift apart over long
    rounds (docs/federation.md, "The demo's numbers").

    Every site holds `train_cases` + `test_cases` phantoms of its own modality and anatomy seed, stored
    its own way (SITE_STORAGE, scaled from `volume_size`); its test cases are the held-out set every
    model is scored on. Baselines train rounds * local_epochs
    epochs with the federation's plan (made from the sites' merged fingerprints), so every model sees the
    same input and gets the same number of passes over the data it sees.
    """

    sites: tuple[str, ...] = ("ct", "mr-t1", "mr-t2")
    rounds: int = 80
    local_epochs: int = 1
    personalise_epochs: int = 10  # after the last round each site fine-tunes the global model (0: none)
    train_cases: int = 24
    test_cases: int = 4
    volume_size: int = 64
    channels: tuple[int, ...] = (16, 32, 64, 128)
    batch_size: int = 16
    learning_rate: float = 2e-3
    augmentation_probability: float = 1.0  # GIN on every sample: less drift between single-modality sites
    round_timeout: float = 900.0  # generous: --local-epochs may make rounds long
    seed: int = 0
    he: bool = False  # homomorphically encrypted aggregation (BFV keys made once into the demo folder)
    dp: bool = False  # DP-SGD at every site, with site.toml [privacy]'s defaults (docs/security.md)

    def __post_init__(self) -> None:
        unknown = [site for site in self.sites if site not in SITE_NAMES]
        if unknown or not self.sites:
            raise ConfigError(f"demo sites must be some of {', '.join(SITE_NAMES)}, got "
                              f"{', '.join(unknown) or 'none'}")
        if len(set(self.sites)) < len(self.sites):
            raise ConfigError(f"each demo modality can have one site only, got {', '.join(self.sites)}")
        if self.he and len(self.sites) < 2:
            raise ConfigError("encrypted aggregation masks each site's update with the others': the demo "
                              "needs at least two sites with --he")
        for name in ("rounds", "local_epochs", "train_cases", "test_cases"):
            value = getattr(self, name)
            if value < 1:
                raise ConfigError(f"demo {name.replace('_', ' ')} must be at least 1, got {value}")
        if self.personalise_epochs < 0:
            raise ConfigError(f"demo personalise epochs must be 0 or more, got {self.personalise_epochs}")
        low, high = VOLUME_SIZE_RANGE
        if not low <= self.volume_size <= high:
            raise ConfigError(f"demo volume size must be between {low} and {high} pixels, got "
                              f"{self.volume_size}")

    @property
    def total_epochs(self) -> int:
        """Epochs every site trains over the run, and what the baselines train."""
        return self.rounds * self.local_epochs

    def site_name(self, modality: str) -> str:
        return SITE_NAMES[modality]

    def site_geometry(self, modality: str) -> PhantomGeometry:
        """How the site of `modality` stores its phantoms at this run's volume size."""
        return SITE_STORAGE[modality].geometry(self.volume_size)
