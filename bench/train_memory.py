"""Peak memory of `fedseg train` on the demo data (target: <= 2 GB).

Runs the real command line in a child process and reads the child's peak resident set size.
Last line: a JSON object with the figures.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

LIMIT_MB = 2048
FEDSEG = [sys.executable, "-m", "app.cli"]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data, run = Path(tmp) / "ct", Path(tmp) / "run"
        subprocess.run(
            [*FEDSEG, "synth", "--out", str(data), "--modality", "ct", "--cases", "20", "--seed", "0"],
            check=True,
            capture_output=True,
        )
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        subprocess.run(
            [*FEDSEG, "train", "--data", str(data), "--aug", "gin", "--epochs", "1", "--out", str(run)],
            check=True,
            capture_output=True,
        )
        peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak_kb <= before:
        print("warning: the training child did not exceed the data child's peak; figure is an upper bound")
    peak_mb = peak_kb / 1024
    print(f"fedseg train (demo CT, 20 cases, GIN, 1 epoch): peak RSS {peak_mb:.0f} MB (limit {LIMIT_MB} MB)")
    print(
        json.dumps(
            {
                "benchmark": "train_memory",
                "peak_rss_mb": round(peak_mb, 1),
                "limit_mb": LIMIT_MB,
                "ratio_to_limit": round(peak_mb / LIMIT_MB, 3),
                "within_limit": peak_mb <= LIMIT_MB,
            }
        )
    )


if __name__ == "__main__":
    main()
