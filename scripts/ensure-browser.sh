#!/usr/bin/env bash
# The dashboard's browser test drives Debian's Chromium through Playwright (never a browser
# build downloaded by `playwright install`). Install it when it is missing; needs root (CI and
# the development machines run as root) or sudo.
set -euo pipefail

CHROMIUM=/usr/bin/chromium
if [ -x "$CHROMIUM" ]; then
  echo "Chromium is installed ($CHROMIUM)" >&2
  exit 0
fi
if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null; then
  as_root=(sudo)
else
  echo "Chromium is missing and this user cannot install it: apt-get install chromium" >&2
  exit 1
fi
command -v apt-get >/dev/null || { echo "Chromium is missing and there is no apt-get; install chromium so that $CHROMIUM exists" >&2; exit 1; }
echo "installing Chromium (Debian package chromium)" >&2
"${as_root[@]}" apt-get update -q
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q --no-install-recommends chromium
[ -x "$CHROMIUM" ] || { echo "apt-get installed chromium but $CHROMIUM is missing" >&2; exit 1; }
