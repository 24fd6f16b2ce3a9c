#!/usr/bin/env bash
# Builds the optional native ledger scan (native/kfm_scan, Rust + PyO3, docs/ledger.md
# "The native accelerator") into a wheel and installs it into the venv of PYTHON
# (default .venv/bin/python). `make venv` runs it.
#
#   deploy/local/build-native.sh [PY]               build (or reuse) the wheel, install it into PY's venv
#   deploy/local/build-native.sh --wheel DIR [PY]   build (or reuse) the wheel and copy it into DIR,
#                                                   installing nothing (deploy/container/build-local.sh)
#
# The wheel is cached in $KFM_CACHE_DIR/native/kfm_scan-HASH/, where HASH covers the
# crate's sources, Cargo.lock, its pyproject.toml and the Python version, so an
# unchanged crate is reinstalled (or left alone) without compiling; crates from
# crates.io are kept in $KFM_CACHE_DIR/cargo and compiled objects in
# $KFM_CACHE_DIR/cargo-target, like the Go builds (deploy/local/gobuild.sh).
#
# Without a Rust toolchain, or if the build fails, the registry runs on the pure
# Python path: this prints one line saying so and exits 0, unless
# KFM_REQUIRE_NATIVE=1 (CI sets it), when it exits 1.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
CACHE="${KFM_CACHE_DIR:-$ROOT/.cache}"
WHEEL_DIR=
if [[ "${1:-}" == --wheel ]]; then
  WHEEL_DIR="${2:?--wheel needs a directory}"
  shift 2
fi
PY="${1:-$ROOT/.venv/bin/python}"
CRATE="$ROOT/native/kfm_scan"

give_up() {
  if [[ "${KFM_REQUIRE_NATIVE:-}" == 1 ]]; then
    echo "native ledger scan not built: $1 (KFM_REQUIRE_NATIVE=1)" >&2
    exit 1
  fi
  echo "native ledger scan not built ($1): ledger checks use the pure Python path"
  exit 0
}

command -v cargo >/dev/null || PATH="$HOME/.cargo/bin:$PATH"
command -v cargo >/dev/null || give_up "no cargo: install Rust with rustup"

sum=$({
  (cd "$CRATE" && find . -path ./target -prune -o -type f \
    \( -name '*.rs' -o -name Cargo.toml -o -name Cargo.lock -o -name pyproject.toml \) -print0 \
    | LC_ALL=C sort -z | xargs -0 sha256sum)
  "$PY" -c 'import sys; print(sys.implementation.cache_tag)'
} | sha256sum | cut -c1-16)
stamp="$(dirname "$PY")/../kfm_scan.stamp"
if [[ -z "$WHEEL_DIR" && "$(cat "$stamp" 2>/dev/null)" == "$sum" ]] && "$PY" -c 'import kfm_scan' 2>/dev/null; then
  exit 0
fi

out="$CACHE/native/kfm_scan-$sum"
if ! compgen -G "$out/*.whl" >/dev/null; then
  mkdir -p "$CACHE/native"
  tmp=$(mktemp -d "$out.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  started=$SECONDS
  echo "building the native ledger scan (Rust, first time takes a few minutes)" >&2
  if ! CARGO_HOME="${CARGO_HOME:-$CACHE/cargo}" CARGO_TARGET_DIR="$CACHE/cargo-target" \
      "$PY" -m pip wheel -q --no-deps -w "$tmp" "$CRATE" >"$tmp.log" 2>&1; then
    tail -n 20 "$tmp.log" >&2
    rm -f "$tmp.log"
    give_up "cargo build failed, see above"
  fi
  rm -f "$tmp.log"
  echo "built the native ledger scan in $((SECONDS - started)) s" >&2
  rm -rf "$out" && mv "$tmp" "$out"
fi
if [[ -n "$WHEEL_DIR" ]]; then
  mkdir -p "$WHEEL_DIR" && cp "$out"/*.whl "$WHEEL_DIR"/
  exit 0
fi
"$PY" -m pip install -q --no-deps --force-reinstall "$out"/*.whl || give_up "pip could not install the wheel"
echo "$sum" >"$stamp"
