//go:build tools

package tools

import _ "github.com/treeverse/lakefs/cmd/lakefs"
