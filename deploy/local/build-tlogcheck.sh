#!/usr/bin/env bash
# Build tests/interop/tlogcheck, the ledger's independent check with Go's
# golang.org/x/mod/sumdb/tlog and sumdb/note (fetched from the Go module proxy,
# pinned by the module's committed go.sum).
# Prints the path of the binary as the last (and only) line on stdout; build logs go to stderr.
#
# The binary's name carries a hash of the module's sources, so an edited
# checker is rebuilt and an unchanged one is reused from .cache/bin.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
SRC="$ROOT/tests/interop/tlogcheck"
CACHE="${KFM_CACHE_DIR:-$ROOT/.cache}"
sum=$(cd "$SRC" && cat go.mod go.sum ./*.go | sha256sum | cut -c1-16)
OUT="$CACHE/bin/tlogcheck-$sum"
if [[ -x "$OUT" ]]; then echo "$OUT"; exit 0; fi
mkdir -p "$CACHE/bin"
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
export GOPATH="${GOPATH:-$CACHE/gopath}"
cd "$SRC"
# A temporary name, then a rename: concurrent builds never see a half-written binary.
tmp=$(mktemp "$OUT.XXXXXX")
trap 'rm -f "$tmp"' EXIT
go build -trimpath -ldflags "-s -w" -o "$tmp" . >&2
mv "$tmp" "$OUT"
echo "$OUT"
