#!/usr/bin/env bash
# Installs dspex from this checkout into a fresh virtualenv and runs every test:
# Rust formatting and lints, Rust unit and integration tests, then pytest against the installed
# package (examples included).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${DSPEX_VENV:-.venv}

python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q ".[test]"

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
"$VENV/bin/python" -m pytest -q tests
