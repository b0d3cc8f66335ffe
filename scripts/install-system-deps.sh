#!/usr/bin/env bash
# Install the Debian packages napari needs to run under a virtual display (Xvfb + Mesa GL + the
# xcb libraries Qt's xcb platform plugin loads). Only missing packages are installed, so a second
# run costs nothing. Needs root (or sudo); CI runs as root.
set -euo pipefail

PACKAGES=(
  xvfb xauth x11-utils
  libgl1 libgl1-mesa-dri libegl1 libglx-mesa0
  libxkbcommon-x11-0 libxcb-xkb1 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0
  libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0
  libdbus-1-3 libfontconfig1
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "system packages: all present"
  exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
  echo "error: missing system packages (${missing[*]}) and no apt-get on this machine;" >&2
  echo "install Xvfb, Mesa OpenGL and the xcb libraries with your package manager." >&2
  exit 1
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "error: need root to install: ${missing[*]}" >&2
    exit 1
  fi
fi

echo "installing system packages: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "system packages: installed"
