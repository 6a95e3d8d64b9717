#!/usr/bin/env bash
# System libraries napari needs on a headless Debian/Ubuntu machine: Xvfb for a virtual screen,
# Mesa for OpenGL (the Qt "offscreen" platform has none), and the xcb libraries Qt 6 loads.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  xvfb xauth libgl1 libegl1 libgl1-mesa-dri libglx-mesa0 libopengl0 \
  libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 \
  libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 \
  libxcb-xinput0 libdbus-1-3 libfontconfig1 >/dev/null
