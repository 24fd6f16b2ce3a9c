#!/usr/bin/env bash
# Build the two Go programs that check the Helm chart (deploy/helm/): helm and
# kubeconform, each with `go install PACKAGE@VERSION` from the Go module proxy
# (their own go.mod and go.sum, checked against the checksum database through
# the proxy; neither module has a replace directive, so no wrapper module is
# needed). Each binary is cached as .cache/bin/NAME-VERSION and built only once.
# Prints the two paths, helm's first, one a line, as the only lines on stdout;
# build logs go to stderr. Versions: HELM_VERSION and KUBECONFORM_VERSION below.
set -euo pipefail
. "$(dirname "$0")/gobuild.sh"

HELM_VERSION=v3.22.0
KUBECONFORM_VERSION=v0.8.0

# go_install NAME PACKAGE VERSION: build PACKAGE@VERSION into $CACHE/bin/NAME-VERSION
# unless it is there already, and print that path.
go_install() {
  local name=$1 pkg=$2 version=$3
  local out="$CACHE/bin/$name-$version"
  if [[ ! -x "$out" ]]; then
    mkdir -p "$CACHE/bin"
    # A private GOBIN, then a rename: concurrent builds never see a half-written binary.
    local gobin
    gobin=$(mktemp -d "$CACHE/bin/.$name.XXXXXX")
    trap 'rm -rf "$gobin"' EXIT
    GOBIN="$gobin" go install -buildvcs=false -trimpath -ldflags "-s -w" "$pkg@$version" >&2
    mv "$gobin/$(basename "$pkg")" "$out"
    rm -rf "$gobin"
    trap - EXIT
  fi
  echo "$out"
}

go_install helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION"
go_install kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION"
