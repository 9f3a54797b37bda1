#!/usr/bin/env bash
# Installs dspex from this checkout into a fresh virtualenv and runs every test:
# Rust formatting and lints, Rust unit and integration tests, then pytest against the installed
# package (examples included).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${DSPEX_VENV:-.venv}

# System packages the tests use (Debian's): PostgreSQL for the SQL storage tests, Chromium for
# the optuna-dashboard browser test. Installed here when missing and we may (root with apt-get);
# otherwise those tests are skipped (or fail under CI=true).
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || ! command -v chromium >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql chromium >/dev/null
    else
        echo "note: install Debian's postgresql and chromium packages to run every test" >&2
    fi
fi

# PostgreSQL tests use DSPEX_TEST_PG_URL; without one, start a throwaway cluster on a loopback
# port, and stop it at the end.
if [ -z "${DSPEX_TEST_PG_URL:-}" ] && ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1; then
    export DSPEX_PG_STATE=${DSPEX_PG_STATE:-/tmp/dspex-pg-test-$$}
    DSPEX_TEST_PG_URL=$(bash scripts/pg.sh start)
    export DSPEX_TEST_PG_URL
    trap 'bash scripts/pg.sh stop' EXIT
fi

python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q ".[test]"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
"$VENV/bin/python" -m pytest -q tests
