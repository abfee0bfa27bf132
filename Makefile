# The README's commands. Each bootstraps .venv on first use: torch first (the local CPU wheel;
# on a CUDA machine pip picks the matching build), then the project with its dev extra.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# Tests, benchmarks and screenshots draw offscreen; `make run` shows the real window where there is a display.
test bench screenshots: export QT_QPA_PLATFORM ?= offscreen
export FLWR_TELEMETRY_ENABLED := 0
# UTF-8 for every Python process whatever the machine's locale (CI may run under plain C/POSIX).
export PYTHONUTF8 := 1

.PHONY: run test bench lint screenshots clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/fedseg start

test: $(STAMP)
	$(BIN)/python -m pytest

# bench/installer_startup.py needs a built bundle: `make installer-test` runs it.
bench: $(STAMP)
	for script in $(filter-out bench/installer_startup.py,$(wildcard bench/*.py)); do \
		echo "== $$script"; $(BIN)/python $$script || exit 1; done

# Renders every page of the desktop app with real content into docs/screenshots (10-15 min: it trains
# a model and runs the demo federation for the pictures).
screenshots: $(STAMP)
	$(BIN)/python -m app.qt.screenshots --out docs/screenshots

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache

# The desktop bundle (docs/installers.md): dist/fedseg/ and on Linux dist/fedseg-VERSION-linux-ARCH.tar.gz.
# Several minutes of CPU; installs the `installer` extra (PyInstaller) on first use. Not part of `make test`.
.PHONY: installer installer-test
installer: $(STAMP)
	$(BIN)/python -c "import PyInstaller" 2>/dev/null || $(BIN)/python -m pip install --quiet -e ".[dev,installer]"
	nice -n 10 $(BIN)/pyinstaller --noconfirm --distpath dist --workpath build/pyinstaller installers/fedseg.spec
	test "$$(uname -s)" != Linux || installers/linux/package.sh dist/fedseg

# The built bundle from a fresh temporary HOME and a bare environment: --version, a one-round demo
# federation, the GUI offscreen, the desktop entry; then the bundled GUI's start-up against the venv's.
installer-test: $(STAMP)
	installers/smoke_test.sh dist/fedseg
	$(BIN)/python bench/installer_startup.py
