"""Render every page of the workbench with real content to PNG: `python -m app.qt.screenshots --out DIR`.

Uses a fresh workspace and settings file (the user's are untouched): the demo workspace, the real
chest CT with its labels, a short real training run on the CT demo site, a segmentation of a held-out
CT phantom with that model, the local demo federation (`fedseg demo --join-site ct`, real Flower
processes, which this workbench joins as its CT site) for the federation and metrics pages, and a
server the Server page starts, which two site processes join, for the operator's view. Takes about
20 minutes on 2 CPU cores. Runs offscreen unless QT_QPA_PLATFORM says otherwise.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

SIZE = (1440, 900)
OPERATOR_MODEL = {"channels": (16, 32, 64, 128), "batch_size": 16, "learning_rate": 0.002}  # a quick run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render every workbench page to PNG.")
    parser.add_argument("--out", type=Path, default=Path("docs/screenshots"), help="folder for the PNG files")
    parser.add_argument("--workspace", type=Path, help="workspace to use (default: a temporary folder)")
    args = parser.parse_args(argv)
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    if args.workspace is not None:
        written = render_screenshots(args.out, args.workspace)
    else:
        with tempfile.TemporaryDirectory(prefix="fedseg-screens-") as folder:
            written = render_screenshots(args.out, Path(folder))
    for path in written:
        print(path)
    return 0


def render_screenshots(out: Path, workspace: Path) -> list[Path]:
    from app.models.training import JobState
    from app.qt.application import create_application
    from app.qt.main_window import MainWindow
    from app.services.settings import SettingsStore
    from app.services.workbench import Workbench

    app = create_application()
    workbench = Workbench(SettingsStore(workspace / "settings.toml"))
    workbench.settings.workspace = str(workspace)
    window = MainWindow(workbench)
    window.resize(*SIZE)
    window.show()
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def wait(condition: Callable[[], bool], timeout: float = 600.0) -> None:
        end = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > end:
                raise TimeoutError("the workbench did not get there in time")
            app.processEvents()
            time.sleep(0.02)
        settle = time.monotonic() + 0.3
        while time.monotonic() < settle:
            app.processEvents()

    def shoot(name: str) -> None:
        path = out / f"{name}.png"
        window.grab().save(str(path))
        written.append(path)

    window.open_demo()
    wait(lambda: workbench.viewer.has_labels)
    viewer = window.pages["viewer"]
    window.navigate("home")
    shoot("home")
    window.navigate("viewer")
    grid = viewer.grid
    _hover(grid)
    shoot("viewer")

    federation = window.page("federation")
    federation.toggle_demo()  # runs in the background while the other pages are shot; the page joins it

    demo = window.demo
    dataset = window.navigate("dataset")
    dataset.open_dataset(demo.sites["ct"])
    wait(lambda: dataset.draft.statistics().checked == len(dataset.draft.rows))
    shoot("dataset")

    training = window.navigate("training")
    training.set_dataset(demo.sites["ct"])  # a first run with the page's own defaults
    training.out.set_path(workspace / "runs" / "site-ct")
    epochs = training.epochs.value()
    training.begin(resume=False)
    wait(lambda: workbench.training.epoch >= epochs // 2 and workbench.training.steps > 0)
    shoot("training-running")
    wait(lambda: workbench.training.state is JobState.FINISHED and not training.timer.isActive())
    shoot("training")

    test_image, _ = demo.first_case("ct", "test")  # held out from training
    window.open_study(test_image, modality="ct")
    wait(lambda: workbench.viewer.study is not None and workbench.viewer.study.source == test_image)
    inference = window.navigate("inference")
    inference.model_path.set_path(workspace / "runs" / "site-ct" / "model.pt")
    inference.run_segmentation()
    wait(lambda: inference.result is not None)
    wait(lambda: "U-Net" in inference.model_info.text(), timeout=60)
    shoot("inference")

    window.navigate("federation")
    wait(lambda: len(federation.run.rows) >= 2 or not federation.demo_timer.isActive(), timeout=1800)
    shoot("federation")  # this site joined, its first rounds in the table

    metrics = window.navigate("metrics")
    wait(lambda: not federation.demo_timer.isActive(), timeout=1800)
    metrics.follow()
    wait(lambda: True)
    shoot("metrics")

    sites = _operate_a_server(window, demo, wait)  # the operator's view of a run it started
    shoot("server")
    operator = window.pages["server"].operator
    operator.stop()
    wait(lambda: not operator.running, timeout=120)  # closing the window would ask about it otherwise
    for site in sites:
        site.kill()

    window.navigate("settings")
    shoot("settings")
    window.close()
    return written


def _operate_a_server(window, demo, wait) -> list:
    """On the Server page, as an operator would: a form for this computer (generated TLS, two rounds),
    Save and Start; then two sites join it with the workbench's own site processes; returns them once
    the server has finished its first round."""
    from app.services.federation_site import SiteForm, SiteJob, site_folder, write_site_config
    from app.services.server_operator import ServerForm
    from federation.config import FederationSettings, ModelSettings
    from federation.processes import free_port

    page = window.navigate("server")
    port = free_port()
    page.fields.set_form(ServerForm(
        host="127.0.0.1", fleet_port=port,
        federation=FederationSettings(rounds=2, min_sites=2, local_epochs=2, round_timeout=900.0),
        model=ModelSettings(labels=("background", "liver", "kidney", "spleen", "pancreas"), **OPERATOR_MODEL),
    ))
    page.generate_certificates()
    page.save(start=True)
    wait(lambda: page.operator.running, timeout=120)
    ca_certificate = page.fields.form().tls.ca_certificate
    sites = []
    for name, modality in (("CT Hospital", "ct"), ("MR-T1 Clinic", "mr-t1")):
        form = SiteForm(name, modality, str(demo.sites[modality]), f"127.0.0.1:{port}", ca_certificate,
                        clientappio_port=free_port())
        job = SiteJob(write_site_config(form, site_folder(page.path.parent / "sites", form.name)))
        job.start()
        sites.append(job)
    wait(lambda: page.operator.run.completed >= 1, timeout=1800)
    page.refresh()
    return sites


def _hover(grid) -> None:
    """Put the cursor read-out on a labelled voxel of the axial view, as if the mouse were there."""
    from app.models.orientation import ViewAxis

    view = grid.view(ViewAxis.AXIAL)
    rect = view.image_rect()
    point = rect.center()
    point.setX(rect.left() + rect.width() * 0.68)
    pixel = view.pixel_at(point)
    if pixel is not None:
        view.cursor_moved.emit(view.model.cursor(ViewAxis.AXIAL, *pixel))


if __name__ == "__main__":
    raise SystemExit(main())
