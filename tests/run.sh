#!/usr/bin/env bash
# The test command (README and .ci/run): install what the tests need, then run them all.
# pytest exits non-zero when anything fails and also when no test is collected (5).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check -r requirements-test.txt

# Debian packages, as root or through sudo; the package lists are fetched only when they are missing or stale.
apt_install() {
    local sudo=""
    [ "$(id -u)" = 0 ] || sudo="sudo"
    $sudo apt-get install -y -qq "$@" >/dev/null 2>&1 || { $sudo apt-get update -qq >/dev/null && $sudo apt-get install -y -qq "$@" >/dev/null; }
}
# The editor's pure JavaScript modules are tested with Node's built-in runner (Debian's nodejs).
command -v node >/dev/null 2>&1 || apt_install nodejs
# The canvas's end-to-end tests drive Debian's Chromium (`playwright install` cannot download browsers here).
[ -x /usr/bin/chromium ] || apt_install chromium
exec python -m pytest "$@"
