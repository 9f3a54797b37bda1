#!/usr/bin/env bash
# Builds the release wheel of dspex with maturin and prints its path (the only line on stdout;
# maturin's and cargo's output go to stderr):
#   bash scripts/build-wheel.sh [OUT_DIR]     # OUT_DIR defaults to dist/
#
# The wheel is abi3 (one wheel for CPython 3.9+) and tagged manylinux_2_34 (override with
# $DSPEX_MANYLINUX). A native build links against the build machine's glibc: this one's symbols
# go up to GLIBC_2.34 (pthread_* and dlsym moved into libc in glibc 2.34), so manylinux_2_34 is
# the oldest tag it qualifies for, and it needs a glibc 2.34+ machine (Debian 12, Ubuntu 22.04,
# RHEL 9 or newer) to build. maturin audits the wheel against the tag (--auditwheel check): a
# symbol newer than the tag, or a shared library outside the manylinux set, fails the build
# instead of producing a wheel that pip would install where it cannot load.
#
# maturin: the one on PATH when it is a maturin 1.x with --auditwheel, otherwise one installed
# from the package index into a build virtualenv ($DSPEX_BUILD_VENV, default target/build-venv).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-dist}
TAG=${DSPEX_MANYLINUX:-manylinux_2_34}
BUILD_VENV=${DSPEX_BUILD_VENV:-target/build-venv}

usable() { # $1: a maturin command; true when it is maturin 1.x and has --auditwheel
    local v
    v=$("$1" --version 2>/dev/null) || return 1
    [[ $v =~ ^maturin\ 1\. ]] && "$1" build --help 2>/dev/null | grep -q -- '--auditwheel'
}

if usable maturin; then
    MATURIN=maturin
else
    MATURIN=$BUILD_VENV/bin/maturin
    if ! usable "$MATURIN"; then
        echo "build-wheel.sh: installing maturin into $BUILD_VENV" >&2
        python3 -m venv "$BUILD_VENV"
        "$BUILD_VENV/bin/python" -m pip install -q 'maturin>=1.8,<2' >&2
        usable "$MATURIN" || { echo "build-wheel.sh: $MATURIN lacks --auditwheel" >&2; exit 1; }
    fi
fi
echo "build-wheel.sh: $("$MATURIN" --version), --compatibility $TAG" >&2

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
# Build into an empty directory so that exactly this build's wheel is found, then move it out.
STAGE=$(mktemp -d "$OUT/.build-wheel.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
start=$SECONDS
"$MATURIN" build --release --compatibility "$TAG" --auditwheel check --out "$STAGE" >&2
shopt -s nullglob
wheels=("$STAGE"/*.whl)
if [ ${#wheels[@]} -ne 1 ]; then
    echo "build-wheel.sh: expected one wheel, maturin wrote ${#wheels[@]}" >&2
    exit 1
fi
name=$(basename "${wheels[0]}")
case $name in
    *-abi3-"$TAG"_*.whl) ;;
    *) echo "build-wheel.sh: unexpected wheel tag: $name" >&2; exit 1 ;;
esac
mv -f "${wheels[0]}" "$OUT/$name"
echo "build-wheel.sh: built $name in $((SECONDS - start)) s" >&2
echo "$OUT/$name"
