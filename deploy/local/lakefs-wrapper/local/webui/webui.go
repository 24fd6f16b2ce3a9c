// Package webui stands in for lakeFS's embedded web UI, which is not built here.
package webui

import "embed"

// UIBuilt reports whether Content holds a built UI. It never does in this build.
var UIBuilt = false

// Content is the (empty) UI file system.
var Content embed.FS

// FallbackHTML is served for UI paths instead of the UI.
var FallbackHTML = []byte(`<!doctype html>
<html><head><meta charset="utf-8"><title>lakeFS</title></head>
<body><p>lakeFS is running. This build has no web UI; use the API at <a href="/api/v1">/api/v1</a>, lakectl, or an SDK.</p></body>
</html>
`)
