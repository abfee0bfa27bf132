#!/bin/sh
# Adds FedSeg Workbench to this user's application menu: share/fedseg.desktop with Exec pointing at
# this folder's fedseg, and its icon, under ${XDG_DATA_HOME:-~/.local/share}. Run again after moving
# the folder.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
data=${XDG_DATA_HOME:-$HOME/.local/share}
mkdir -p "$data/applications" "$data/icons/hicolor/256x256/apps"
cp "$here/share/fedseg.png" "$data/icons/hicolor/256x256/apps/fedseg.png"
sed "s|^Exec=fedseg |Exec=\"$here/fedseg\" |" "$here/share/fedseg.desktop" > "$data/applications/fedseg.desktop"
echo "installed $data/applications/fedseg.desktop"
