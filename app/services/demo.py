"""The demo workspace: one phantom dataset per modality (the federation's three demo sites) and the
real chest CT with labels that slicerio ships, so a first-time user has something to look at; and
the local demo federation (`fedseg demo`) run in the background."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from app.services.child_process import FedsegChild

# Modality -> seed: each demo site has its own patients.
DEMO_SITES = {"ct": 1, "mr-t1": 2, "mr-t2": 3}
# 16 training and 4 test phantoms per site: enough for a first local training with the page's defaults to
# reach the federation demo's single-site Dice on the test cases (bench/first_training.py).
DEMO_CASES = 20
DEMO_SIZE = 64
TEST_FRACTION = 0.2  # the last fifth of a site's phantoms are its test cases
CHEST_CT = "CTChest4.nrrd"
CHEST_LABELS = "Segmentation.seg.nrrd"
DEMO_JOIN_SITE = "ct"  # the demo site this workbench takes part as
SERVER_JOB = "server"  # the job name of the server's events (federation.server_run)


@dataclass(frozen=True)
class DemoWorkspace:
    """Paths of the demo data: a dataset folder per site modality, the chest CT and its labels."""

    root: Path
    sites: dict[str, Path]
    chest_ct: Path
    chest_labels: Path

    def first_case(self, modality: str, split: str = "training") -> tuple[Path, Path]:
        """(image, label) of the first case of a site's dataset split ("training" or "test")."""
        from segmentation.datalist import load_dataset

        case = getattr(load_dataset(self.sites[modality]), split)[0]
        return case.image, case.label  # type: ignore[return-value]


def chest_ct_files() -> tuple[Path, Path]:
    """slicerio's chest CT (128 x 128 x 34, HU) and its Slicer segmentation (ribs, spine, lungs...)."""
    import slicerio

    data = Path(slicerio.__file__).parent / "data"
    return data / CHEST_CT, data / CHEST_LABELS


def prepare_demo_workspace(root: Path, progress: Callable[[str], None] | None = None) -> DemoWorkspace:
    """Make the site datasets under root/demo that are missing or were made with other demo settings (an
    earlier workbench's fewer cases), in seconds, and return the workspace. A site folder that holds a
    file the demo does not write is left as it is, so nothing of the user's is ever removed."""
    sites = {}
    for modality, seed in DEMO_SITES.items():
        sites[modality] = root / "demo" / f"site-{modality}"
        _prepare_site(sites[modality], modality, seed, progress or (lambda message: None))
    chest_ct, chest_labels = chest_ct_files()
    return DemoWorkspace(root / "demo", sites, chest_ct, chest_labels)


def _prepare_site(folder: Path, modality: str, seed: int, progress: Callable[[str], None]) -> None:
    """The site made (or remade) as the federation demo makes its sites, with the workbench's settings."""
    from federation.demo.data import NotDemoFolder, geometry_spec, site_dataset
    from segmentation.synth.scan import DEFAULT_GEOMETRY

    tests = max(1, round(DEMO_CASES * TEST_FRACTION))
    spec = {"modality": modality, "seed": seed, "train_cases": DEMO_CASES - tests, "test_cases": tests,
            "size": DEMO_SIZE, "geometry": geometry_spec(DEFAULT_GEOMETRY)}
    try:
        site_dataset(folder, spec, progress)
    except NotDemoFolder as error:
        progress(f"kept {folder} as it is: {error.foreign.relative_to(folder)} is not a demo file")


class DemoFederationJob(FedsegChild):
    """`fedseg demo`: a server and one site per demo modality on this computer, in the background.

    With join_site (a modality) the demo starts every site but that one and waits for it to join from
    outside: joining_site_config() names its site.toml once the demo announced it. Its own progress goes
    to OUT/demo.log; the server's events (every site's numbers per round) are found under OUT once the
    server writes them.
    """

    def __init__(self, out: Path, rounds: int | None = None, join_site: str | None = None) -> None:
        """rounds None: the demo's own (federation.demo.DemoSettings: rounds short enough to reach the
        pooled model)."""
        chosen = [] if rounds is None else ["--rounds", str(rounds)]
        joining = [] if join_site is None else ["--join-site", join_site]
        super().__init__(["demo", "--out", str(out), *chosen, *joining], out / "demo.log",
                         out / "demo-events.jsonl")
        self.out = out
        self.join_site = join_site

    @property
    def federation_dir(self) -> Path:
        return self.out / "federation"

    def start(self) -> None:
        """Start the demo; a previous demo's announcement is removed first, so it is never taken for this
        one's."""
        from federation.demo.federated import JOIN_ANNOUNCEMENT

        (self.federation_dir / JOIN_ANNOUNCEMENT).unlink(missing_ok=True)
        super().start()

    def joining_site_config(self) -> Path | None:
        """The site.toml the demo left to this workbench, once it is announced (None before)."""
        from federation.demo.federated import announced_site_config

        return None if self.join_site is None else announced_site_config(self.federation_dir)

    def server_events(self) -> Path | None:
        """The events.jsonl under OUT whose job is the server's, once it exists."""
        for path in sorted(self.out.rglob("events.jsonl")):
            try:
                with open(path, encoding="utf-8") as stream:
                    first = json.loads(stream.readline() or "{}")
            except (OSError, json.JSONDecodeError):
                continue
            if first.get("job") == SERVER_JOB:
                return path
        return None
