#!/usr/bin/env bash
# Longer fuzzing runs than CI's: the property tests of crates/engine/tests/fuzz.rs (release
# build) and tests/test_fuzz.py (Hypothesis), with CASES cases per target (default 100000 for
# Rust, a tenth of it for Python, whose cases go through the whole Python API).
#   scripts/fuzz.sh [CASES]
set -euo pipefail
cd "$(dirname "$0")/.."
cases="${1:-100000}"
echo "== Rust: $cases cases per target"
PROPTEST_CASES="$cases" cargo test --release -q -p dspex-engine --test fuzz -- --nocapture
echo "== Python: $((cases / 10)) examples per target"
DSPEX_FUZZ_EXAMPLES="$((cases / 10))" python -m pytest -q tests/test_fuzz.py
