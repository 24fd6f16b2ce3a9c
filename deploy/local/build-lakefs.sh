#!/usr/bin/env bash
# Build lakeFS's server (cmd/lakefs) from the Go module in lakefs-wrapper/, which
# pins the lakeFS version and stands in for the nested modules the Go module
# proxy does not serve (lakefs-wrapper/README.md says why and how to upgrade).
# Prints the binary's path (.cache/bin/lakefs-<version>-<hash of the module's
# files>) as the only line on stdout; build logs go to stderr.
set -euo pipefail
. "$(dirname "$0")/gobuild.sh"
MOD="$GOBUILD_ROOT/deploy/local/lakefs-wrapper"
version=$(module_version "$MOD" github.com/treeverse/lakefs)
require_pinned LAKEFS_VERSION "$version" "$MOD"
go_build "lakefs-$version" "$MOD" github.com/treeverse/lakefs/cmd/lakefs \
  -ldflags "-s -w -X github.com/treeverse/lakefs/pkg/version.Version=${version#v}"
