"""Desktop bundle vs venv: seconds from starting `fedseg gui` to its first window drawn (offscreen),
both measured in this one run, alternating, median of several; plus the bundle's size on disk.
The last line is a JSON object. Without a built bundle (make installer) it says so and exits 1.
Never asserts a timing.
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

RUNS = 5
BUNDLE = Path(__file__).resolve().parents[1] / "dist" / "fedseg"
ENV = {**os.environ, "QT_QPA_PLATFORM": os.environ.get("QT_QPA_PLATFORM", "offscreen")}


def launch_seconds(command: list[str], settings: Path) -> float:
    """Seconds from starting `COMMAND gui --quit-when-shown` to the time it prints on first drawing."""
    start = time.time()
    result = subprocess.run([*command, "gui", "--quit-when-shown", "--settings", str(settings)],
                            capture_output=True, text=True, env=ENV, timeout=300)
    shown = [line for line in result.stdout.splitlines() if line.startswith("shown ")]
    if not shown:
        raise SystemExit(f"{command[0]} gui did not draw its window (exit {result.returncode}): "
                         f"{result.stderr.strip()[-500:]}")
    return float(shown[0].split()[1]) - start


def folder_megabytes(folder: Path) -> float:
    """Size of the files in `folder` (links not counted twice)."""
    files = [path for path in folder.rglob("*") if path.is_file() and not path.is_symlink()]
    return sum(path.stat().st_size for path in files) / 2**20


def main() -> int:
    executable = BUNDLE / "fedseg"
    if not executable.exists():
        print(f"no bundle at {BUNDLE}: build it with `make installer`; nothing measured", file=sys.stderr)
        return 1
    commands = {"venv": [sys.executable, "-m", "app.cli"], "bundle": [str(executable)]}
    times: dict[str, list[float]] = {name: [] for name in commands}
    with tempfile.TemporaryDirectory() as folder:
        settings = Path(folder) / "settings.toml"
        for command in commands.values():
            launch_seconds(command, settings)  # warm the file cache once; not counted
        for _ in range(RUNS):
            for name, command in commands.items():
                times[name].append(launch_seconds(command, settings))
    venv, bundle = statistics.median(times["venv"]), statistics.median(times["bundle"])
    size = folder_megabytes(BUNDLE)
    for name, runs in times.items():
        print(f"{name}: launch to first window median {statistics.median(runs):.2f} s over {RUNS} runs "
              f"({', '.join(f'{seconds:.2f}' for seconds in runs)})")
    print(f"bundle / venv: {bundle / venv:.2f}; bundle size {size:.0f} MiB")
    print(json.dumps({
        "venv_launch_s": round(venv, 3), "bundle_launch_s": round(bundle, 3),
        "bundle_to_venv_ratio": round(bundle / venv, 3), "runs": RUNS,
        **{f"{name}_runs_s": [round(seconds, 3) for seconds in runs] for name, runs in times.items()},
        "bundle_size_mib": round(size),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
