#!/usr/bin/env bash
# Build SeaweedFS's `weed` (the persistent S3 server of the local stack,
# KFM_STACK_S3_SERVER=seaweedfs) from the Go module in seaweedfs-wrapper/, which
# pins the SeaweedFS version (seaweedfs-wrapper/README.md says why a wrapper).
# Prints the binary's path (.cache/bin/weed-<version>-<hash of the module's
# files>) as the only line on stdout; build logs go to stderr.
set -euo pipefail
. "$(dirname "$0")/gobuild.sh"
MOD="$GOBUILD_ROOT/deploy/local/seaweedfs-wrapper"
version=$(module_version "$MOD" github.com/seaweedfs/seaweedfs)
require_pinned SEAWEEDFS_VERSION "$version" "$MOD"
go_build "weed-$version" "$MOD" github.com/seaweedfs/seaweedfs/weed -ldflags "-s -w"
