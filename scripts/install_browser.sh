#!/bin/sh
# Installs Debian's Chromium for the browser tests (tests/test_browser.py), which drive it with Playwright
# at /usr/bin/chromium, and Noto CJK so that the pages' Traditional Chinese renders in their screenshots.
# Called by `make test`. Does nothing when both are there; needs root and apt-get to install them, and
# otherwise says why the browser tests will be skipped (or fail under CI=true).
set -eu

BROWSER=/usr/bin/chromium
PACKAGES=""
[ -x "$BROWSER" ] || PACKAGES="chromium"
dpkg-query -W -f='${Status}' fonts-noto-cjk 2>/dev/null | grep -q "ok installed" || PACKAGES="$PACKAGES fonts-noto-cjk"

if [ -z "$PACKAGES" ]; then
    exit 0
fi
if [ -x "$BROWSER" ] && { [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; }; then
    echo "install_browser: fonts-noto-cjk is missing: Chinese text in the screenshots will show as boxes" >&2
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install_browser: $BROWSER is missing and installing it needs root (apt-get install chromium);" \
         "the browser tests will be skipped (under CI=true they fail)" >&2
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser: $BROWSER is missing and apt-get is not available to install it;" \
         "the browser tests will be skipped (under CI=true they fail)" >&2
    exit 0
fi

echo "install_browser: installing$PACKAGES with apt-get (for the browser tests)"
export DEBIAN_FRONTEND=noninteractive
# -qq keeps the progress output out of the test log; errors still reach stderr.
if apt-get -qq update </dev/null >/dev/null &&
   apt-get -qq install -y --no-install-recommends $PACKAGES </dev/null >/dev/null &&
   [ -x "$BROWSER" ]; then
    exit 0
fi
echo "install_browser: could not install chromium (see apt-get's errors above);" \
     "the browser tests will be skipped (under CI=true they fail)" >&2
# Under CI the browser tests must run: stop here rather than at the first browser test.
[ "${CI:-}" = "true" ] && exit 1
exit 0
