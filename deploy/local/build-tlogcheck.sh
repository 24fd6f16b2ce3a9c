#!/usr/bin/env bash
# Build tests/interop/tlogcheck, the ledger's independent check with Go's
# golang.org/x/mod/sumdb/tlog and sumdb/note (pinned by the module's go.sum).
# Prints the path of the binary (.cache/bin/tlogcheck-<hash of the module's
# files>) as the only line on stdout; build logs go to stderr.
set -euo pipefail
. "$(dirname "$0")/gobuild.sh"
go_build tlogcheck "$GOBUILD_ROOT/tests/interop/tlogcheck" . -ldflags "-s -w"
