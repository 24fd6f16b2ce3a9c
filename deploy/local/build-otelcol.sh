#!/usr/bin/env bash
# Build tests/interop/otelcol, an OpenTelemetry Collector with the OTLP receiver
# and the contrib file exporter, every go.opentelemetry.io/collector module at one
# release (v0.161.0 and its v1.67.0 modules; contrib v0.161.0), pinned by the
# module's go.sum. The tests send it the receiver's and the worker's spans and
# our bundles' OTLP JSON. Prints the path of the binary (.cache/bin/otelcol-<hash
# of the module's files>) as the only line on stdout; build logs go to stderr.
set -euo pipefail
. "$(dirname "$0")/gobuild.sh"
go_build otelcol "$GOBUILD_ROOT/tests/interop/otelcol" . -ldflags "-s -w"
