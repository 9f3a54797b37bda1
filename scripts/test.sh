#!/usr/bin/env bash
# Builds dspex's release wheel from this checkout (scripts/build-wheel.sh), installs it into a
# virtualenv and runs every test: Rust formatting and lints, Rust unit and integration tests, then
# pytest against the installed package (examples included, and the wheel in a clean virtualenv).
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

# The release wheel, built once (scripts/build-wheel.sh prints its path), is what the tests run
# against: installed here with the test extra, and installed again by tests/test_wheel.py into a
# clean virtualenv without a Rust toolchain to run the README's quickstart.
DSPEX_WHEEL=$(bash scripts/build-wheel.sh)
export DSPEX_WHEEL

python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "$DSPEX_WHEEL[test]"
# A venv kept from an earlier run may hold a dspex of the same version: replace it with this build.
"$VENV/bin/python" -m pip install -q --force-reinstall --no-deps "$DSPEX_WHEEL"
"$VENV/bin/ruff" check python tests benches examples
"$VENV/bin/mypy" python/dspex

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps -q
cargo test --workspace
# The local OpenAI-compatible server the LM tests talk to (crates/testlm).
cargo build --release -q -p dspex-testlm
export DSPEX_TESTLM="$PWD/target/release/dspex-testlm"
"$VENV/bin/python" -m pytest -q tests
