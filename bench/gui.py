"""Workbench responsiveness: launch to first window drawn (subprocess, median of several runs) and the
time to render one 512x512 slice with its label overlay (median). Prints figures and their ratio to
the targets; the last line is a JSON object. Never asserts a timing.

Targets: launch <= 1.0 s (issue 13) with torch and MONAI not imported; render <= 16 ms (issue 5).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LAUNCH_RUNS = 5
RENDER_RUNS = 60
LAUNCH_TARGET_S = 1.0
RENDER_TARGET_MS = 16.0
HEAVY_MODULES = ("torch", "monai", "matplotlib", "SimpleITK", "pydicom")
PROBE = "--probe-imports"
ENV = {**os.environ, "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen")}


def launch_seconds(settings: Path) -> float:
    """Seconds from starting `fedseg gui` to its first window being drawn."""
    start = time.time()
    result = subprocess.run([sys.executable, "-m", "app.cli", "gui", "--quit-when-shown", "--settings",
                             str(settings)], capture_output=True, text=True, env=ENV, timeout=120)
    shown = next(line for line in result.stdout.splitlines() if line.startswith("shown "))
    return float(shown.split()[1]) - start


def heavy_modules_at_start() -> list[str]:
    """Which of HEAVY_MODULES a fresh process has imported once the main window is shown."""
    result = subprocess.run([sys.executable, __file__, PROBE], capture_output=True, text=True, env=ENV,
                            timeout=120)
    return json.loads(result.stdout.strip().splitlines()[-1])


def probe_imports() -> None:
    """(In a child process) show the main window, print the heavy modules loaded by then as JSON."""
    os.environ.setdefault("QT_QPA_PLATFORM", ENV["QT_QPA_PLATFORM"])
    from app.qt.application import create_application
    from app.qt.main_window import MainWindow
    from app.services.settings import SettingsStore
    from app.services.workbench import Workbench

    app = create_application()
    with tempfile.TemporaryDirectory() as folder:
        window = MainWindow(Workbench(SettingsStore(Path(folder) / "settings.toml")))
        window.show()
        app.processEvents()
    print(json.dumps([name for name in HEAVY_MODULES if name in sys.modules]))


def render_milliseconds() -> list[float]:
    """Per-render times of: window + colour a 512x512 slice and its labels, paint both into 512x512."""
    os.environ.setdefault("QT_QPA_PLATFORM", ENV["QT_QPA_PLATFORM"])
    import numpy as np
    from PySide6.QtCore import QRectF
    from PySide6.QtGui import QImage, QPainter

    from app.models.orientation import ViewAxis
    from app.models.study import Study
    from app.models.viewer import ViewerModel
    from app.qt.application import create_application
    from app.qt.viewer.slice_view import argb_qimage, gray_qimage, paint_slice
    from segmentation.volume import Volume

    create_application()
    rng = np.random.default_rng(0)
    image = rng.integers(-1000, 1500, size=(8, 512, 512)).astype(np.int16)
    labels = np.zeros(image.shape, np.uint8)
    labels[:, 100:300, 120:380] = 1
    labels[:, 250:420, 200:260] = 2
    volume = Volume(image, spacing=(0.7, 0.7, 2.5), modality="ct")
    model = ViewerModel()
    model.set_study(Study(volume, Path("bench.nii.gz"), "bench"))
    model.set_labels(volume.with_array(labels, labels={1: "liver", 2: "spleen"}))
    target = QImage(512, 512, QImage.Format.Format_ARGB32_Premultiplied)
    times = []
    for index in range(RENDER_RUNS):
        model.set_slice(ViewAxis.AXIAL, index % 8)
        start = time.perf_counter()
        gray, overlay = model.gray_slice(ViewAxis.AXIAL), model.overlay_slice(ViewAxis.AXIAL)
        painter = QPainter(target)
        paint_slice(painter, QRectF(0, 0, 512, 512), gray_qimage(gray), argb_qimage(overlay))
        painter.end()
        times.append((time.perf_counter() - start) * 1000)
    return times


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        settings = Path(folder) / "settings.toml"
        launch_seconds(settings)  # warm the file cache once; not counted
        launches = [launch_seconds(settings) for _ in range(LAUNCH_RUNS)]
    heavy = heavy_modules_at_start()
    renders = render_milliseconds()
    launch, render = statistics.median(launches), statistics.median(renders)
    runs = ", ".join(f"{seconds:.2f}" for seconds in launches)
    print(f"launch to first window: median {launch:.2f} s over {LAUNCH_RUNS} runs ({runs}); "
          f"target {LAUNCH_TARGET_S} s, ratio {launch / LAUNCH_TARGET_S:.2f}")
    print(f"heavy modules imported at start-up: {', '.join(heavy) or 'none'}")
    print(f"render 512x512 slice + overlay: median {render:.2f} ms over {RENDER_RUNS} runs "
          f"(min {min(renders):.2f}, max {max(renders):.2f}); target {RENDER_TARGET_MS} ms, "
          f"ratio {render / RENDER_TARGET_MS:.2f}")
    print(json.dumps({
        "launch_to_window_s": round(launch, 3), "launch_runs_s": [round(s, 3) for s in launches],
        "launch_target_s": LAUNCH_TARGET_S, "launch_ratio": round(launch / LAUNCH_TARGET_S, 3),
        "heavy_modules_at_start": heavy,
        "render_512_overlay_ms": round(render, 3), "render_target_ms": RENDER_TARGET_MS,
        "render_ratio": round(render / RENDER_TARGET_MS, 3),
    }))


if __name__ == "__main__":
    probe_imports() if PROBE in sys.argv else main()
