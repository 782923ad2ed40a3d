#!/usr/bin/env bash
# bash scripts/install_browser.sh   -- Debian's Chromium for the demo's browser test (tests/demo/)
# Playwright drives /usr/bin/chromium; its own browser download (`playwright install`) cannot reach
# its CDN here, so the browser comes from apt. Idempotent: does nothing when Chromium is present.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core
/usr/bin/chromium --version 2>/dev/null
