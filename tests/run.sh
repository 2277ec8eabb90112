#!/usr/bin/env bash
# The test command (README and .ci/run): install what the tests need, then run them all.
# pytest exits non-zero when anything fails and also when no test is collected (5).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
# The editor's pure JavaScript modules are tested with Node's built-in runner (Debian's nodejs).
if ! command -v node >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then apt-get install -y -qq nodejs >/dev/null; else sudo apt-get install -y -qq nodejs >/dev/null; fi
fi
# The canvas's end-to-end tests drive Debian's Chromium (`playwright install` cannot download browsers here).
if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ]; then apt-get install -y -qq chromium >/dev/null; else sudo apt-get install -y -qq chromium >/dev/null; fi
fi
exec python -m pytest "$@"
