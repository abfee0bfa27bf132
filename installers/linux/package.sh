#!/bin/sh
# Linux release archive of a built bundle: adds the desktop entry, its icon and its installer script,
# then writes dist/fedseg-VERSION-linux-ARCH.tar.gz (one top-level folder, fedseg/).
set -eu
bundle=${1:-dist/fedseg}
here=$(dirname "$0")
mkdir -p "$bundle/share"
cp "$here/fedseg.desktop" "$here/../fedseg.png" "$bundle/share/"
cp "$here/install-desktop-entry.sh" "$bundle/"
chmod +x "$bundle/install-desktop-entry.sh"
version=$("$bundle/fedseg" --version | cut -d' ' -f2)
archive="$(dirname "$bundle")/fedseg-$version-linux-$(uname -m).tar.gz"
tar -C "$(dirname "$bundle")" -czf "$archive" "$(basename "$bundle")"
echo "$archive: $(du -h "$archive" | cut -f1) (bundle $(du -sh "$bundle" | cut -f1))"
