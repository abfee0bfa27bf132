#!/bin/sh
# `make installer-test`: runs a built bundle as a new user on a machine without Python would: a fresh
# temporary HOME, a bare environment (no venv, no PYTHONPATH, nothing of this checkout on PATH).
# Checks --version, a Flower-named executable, a one-round headless demo federation (real Flower processes
# started through the bundle's Flower-named executables), the GUI drawn offscreen and quitting, and the
# Linux desktop-entry installer.
set -eu
bundle=${1:-dist/fedseg}
[ -x "$bundle/fedseg" ] || { echo "installer-test: no bundle at $bundle; build it with make installer" >&2; exit 1; }
bundle=$(cd "$bundle" && pwd)
home=$(mktemp -d)
# On failure, the tails of the logs the bundle wrote (Flower's processes log to files) say why.
trap 'status=$?; [ $status -eq 0 ] || find "$home" -name "*.log" -exec tail -n 25 -v {} +; rm -rf "$home"' EXIT
bare() { (cd "$home" && env -i HOME="$home" PATH=/usr/bin:/bin LANG=C.UTF-8 QT_QPA_PLATFORM=offscreen "$@"); }

echo "== fedseg --version"
bare "$bundle/fedseg" --version

echo "== flwr --version (the bundle's executable named after Flower's command)"
bare "$bundle/flwr" --version | grep '^Flower version: '

echo "== fedseg demo --rounds 1 --local-epochs 1 --sites ct,mr-t1"
bare "$bundle/fedseg" demo --rounds 1 --local-epochs 1 --sites ct,mr-t1 --out "$home/demo"
test -s "$home/demo/report.json"

echo "== fedseg gui --quit-when-shown (offscreen)"
bare "$bundle/fedseg" gui --quit-when-shown --settings "$home/settings.toml" | grep '^shown '

if [ -x "$bundle/install-desktop-entry.sh" ]; then
    echo "== install-desktop-entry.sh"
    bare "$bundle/install-desktop-entry.sh"
    grep -q "^Exec=\"$bundle/fedseg\" gui" "$home/.local/share/applications/fedseg.desktop"
    test -s "$home/.local/share/icons/hicolor/256x256/apps/fedseg.png"
fi
echo "installer-test: passed"
