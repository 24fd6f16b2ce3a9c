#!/usr/bin/env bash
# Build SeaweedFS's `weed` binary (the persistent S3 server of the local stack,
# KFM_STACK_S3_SERVER=seaweedfs) from the Go module proxy through a wrapper module.
# Prints the path of the binary as the last (and only) line on stdout; build logs go to stderr.
#
# Why a wrapper: SeaweedFS's go.mod carries a `replace` directive, which Go only
# honours in the main module, so `go install github.com/seaweedfs/seaweedfs/weed@v`
# refuses it ("The go.mod file for the module providing named packages contains
# one or more replace directives"). The wrapper requires SeaweedFS, copies the
# replace lines and upstream's go.sum, and builds ./weed from there.
set -euo pipefail
# The only version the module proxy serves (SeaweedFS 4.53); github.com/chrislusf/seaweedfs is not served.
SEAWEEDFS_VERSION="${SEAWEEDFS_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}"
CACHE="${KFM_CACHE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)/.cache}"
OUT="$CACHE/bin/weed-$SEAWEEDFS_VERSION"
if [[ -x "$OUT" ]]; then echo "$OUT"; exit 0; fi
W="$CACHE/seaweedfs-wrapper-$SEAWEEDFS_VERSION"
mkdir -p "$W" "$CACHE/bin"
export GOFLAGS="${GOFLAGS:--buildvcs=false} -mod=mod"
export GOPATH="${GOPATH:-$CACHE/gopath}"
cd "$W"
# `go mod download -json` prints where the module's go.mod and source tree are in the cache.
info=$(go mod download -json "github.com/seaweedfs/seaweedfs@$SEAWEEDFS_VERSION")
modfile=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])' <<<"$info")
moddir=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])' <<<"$info")
cp "$modfile" upstream.mod
cp "$moddir/go.sum" go.sum
chmod u+w go.sum
goline=$(grep -m1 '^go ' upstream.mod)
{
  echo "module kfm.local/seaweedfswrapper"
  echo
  echo "$goline"
  echo
  echo "require github.com/seaweedfs/seaweedfs $SEAWEEDFS_VERSION"
  echo
  grep '^replace ' upstream.mod || true
} > go.mod
cat > tools.go <<'GO'
//go:build tools

package tools

import _ "github.com/seaweedfs/seaweedfs/weed"
GO
go get "github.com/seaweedfs/seaweedfs/weed@$SEAWEEDFS_VERSION" >&2
go build -trimpath -ldflags "-s -w" -o "$OUT.tmp" github.com/seaweedfs/seaweedfs/weed >&2
mv "$OUT.tmp" "$OUT"
echo "$OUT"
