# Sourced (not run) by deploy/local/build-*.sh: the Go environment they share and
# `go_build`, which builds one package of a Go module checked in to this
# repository into the build cache and prints the binary's path.
#
# Modules come from the Go module proxy into $GOPATH (default .cache/gopath) and
# are checked against the module's committed go.sum; -mod=readonly means a build
# never edits the checked-in go.mod or go.sum (an incomplete one is an error).
# tests/unit/test_go_modules.py sources this file too and runs `go vet` with the
# same GO_FLAGS, so the check reuses the packages a build compiled.

GOBUILD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${KFM_CACHE_DIR:-$GOBUILD_ROOT/.cache}"
export GOPATH="${GOPATH:-$CACHE/gopath}"
GO_FLAGS=(-buildvcs=false -mod=readonly -trimpath)

command -v go >/dev/null || { echo "go not found: the Go toolchain (1.26+) builds the local stack's servers" >&2; exit 1; }

# module_version DIR MODULE: the version of MODULE that DIR's go.mod requires (read
# from go.mod alone: `go list -m` would load the module graph, and a cache hit needs none).
module_version() {
  go mod edit -json "$1/go.mod" | python3 -c '
import json, sys
found = [r["Version"] for r in json.load(sys.stdin).get("Require") or [] if r["Path"] == sys.argv[2]]
if not found:
    sys.exit(f"{sys.argv[1]}/go.mod requires no {sys.argv[2]}")
print(found[0])' "$1" "$2"
}

# require_pinned VAR VERSION DIR: VAR (e.g. LAKEFS_VERSION) set to another version
# than DIR's go.mod pins is refused, not silently ignored.
require_pinned() {
  local want=${!1:-}
  if [[ -n "$want" && "$want" != "$2" ]]; then
    echo "$1=$want: ${3#"$GOBUILD_ROOT"/}/go.mod pins $2; change the version there (see its README.md)" >&2
    exit 2
  fi
}

# go_build NAME DIR PACKAGE [go build flags...]
# Builds PACKAGE in the module in DIR to $CACHE/bin/NAME-HASH and prints that path
# (the only line on stdout; build logs go to stderr). HASH covers every go.mod,
# go.sum and *.go file under DIR (nested modules included), PACKAGE and the flags,
# so an edited module is rebuilt and an unchanged one is reused without compiling.
go_build() {
  local name=$1 dir=$2 pkg=$3; shift 3
  local sum out
  sum=$({
    (cd "$dir" && find . -type f \( -name go.mod -o -name go.sum -o -name '*.go' \) -print0 \
      | LC_ALL=C sort -z | xargs -0 sha256sum)
    printf '%s\n' "$pkg" "$@"
  } | sha256sum | cut -c1-16)
  out="$CACHE/bin/$name-$sum"
  if [[ ! -x "$out" ]]; then
    mkdir -p "$CACHE/bin"
    # A temporary name, then a rename: concurrent builds never see a half-written binary.
    GOBUILD_TMP=$(mktemp "$out.XXXXXX")
    trap 'rm -f "$GOBUILD_TMP"' EXIT
    go -C "$dir" build "${GO_FLAGS[@]}" "$@" -o "$GOBUILD_TMP" "$pkg" >&2
    mv "$GOBUILD_TMP" "$out"
  fi
  echo "$out"
}
