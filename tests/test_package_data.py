"""An installed wheel carries every asset: the package-data globs in pyproject.toml cover each file in assets/
(a new icon or template outside them would be missing from `pip install` and the GUI would fail to start)."""

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_asset_is_package_data():
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    assert "assets*" in setuptools["packages"]["find"]["include"]
    assets = ROOT / "assets"
    shipped = {path for pattern in setuptools["package-data"]["assets"] for path in assets.glob(pattern)}
    present = {path for path in assets.rglob("*") if path.is_file() and not path.name.startswith(".")}
    assert present and present <= shipped, sorted(str(path.relative_to(assets)) for path in present - shipped)
