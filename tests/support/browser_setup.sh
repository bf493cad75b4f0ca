#!/bin/sh
# Install headless Chromium (Debian's `chromium`) for the report's rendering test
# (tests/tools/test_report.py, through tests/support/browser.py). Idempotent: does
# nothing when it is there. Skips quietly, exit 0, when not root or without
# apt-get: the test then skips and says why.
set -u
command -v chromium >/dev/null 2>&1 && exit 0
[ "$(id -u)" = 0 ] || exit 0
command -v apt-get >/dev/null 2>&1 || exit 0
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -qq chromium >/dev/null 2>&1; then
    # The package lists may be missing or stale on a fresh machine.
    apt-get update -qq >/dev/null 2>&1 && apt-get install -y -qq chromium >/dev/null 2>&1 \
        || echo "browser_setup.sh: could not install chromium; the report rendering test will skip" >&2
fi
exit 0
