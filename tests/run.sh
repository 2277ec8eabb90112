#!/usr/bin/env bash
# The test command (README and .ci/run): install what the tests need, then run them all.
# pytest exits non-zero when anything fails and also when no test is collected (5).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check -r requirements-test.txt
exec python -m pytest "$@"
