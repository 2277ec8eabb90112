#!/usr/bin/env bash
# The test command (README and .ci/run): install what the tests need, then run them all.
# pytest exits non-zero when anything fails and also when no test is collected (5).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check -r requirements-test.txt -r requirements-ray.txt

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

# The storage tests run against PostgreSQL too: Debian's server, as a throwaway cluster in a temporary folder,
# listening on a free loopback port only, without fsync (nothing in it outlives the run); stopped and removed at exit.
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }
[ -n "$(pg_bin)" ] || apt_install postgresql
PG_BIN="$(pg_bin)"
PG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/flowcanvas-pg.XXXXXX")"
as_postgres() {  # the server refuses to run as root: as root, run it as Debian's postgres user
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
[ "$(id -u)" = 0 ] && chown postgres "$PG_DIR"
PG_PORT="$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
stop_postgres() {
    as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
    rm -rf "$PG_DIR"
}
trap stop_postgres EXIT
as_postgres "$PG_BIN/initdb" -D "$PG_DIR/data" -U flowcanvas --auth=trust -E UTF8 >/dev/null
as_postgres "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w \
    -o "-h 127.0.0.1 -p $PG_PORT -k $PG_DIR -F" start >/dev/null
export FLOWCANVAS_TEST_POSTGRES_URL="postgresql+psycopg://flowcanvas@127.0.0.1:$PG_PORT/postgres"

# Lint and format first: a finding fails the run before the slow suites (rules and why: pyproject.toml).
python -m ruff check .
python -m ruff format --check .

python -m pytest "$@"
