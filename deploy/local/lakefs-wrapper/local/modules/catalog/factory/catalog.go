// Package factory provides catalog extensions; open source uses the defaults.
package factory

import (
	"github.com/treeverse/lakefs/pkg/block"
	"github.com/treeverse/lakefs/pkg/catalog"
	"github.com/treeverse/lakefs/pkg/config"
	"github.com/treeverse/lakefs/pkg/graveler"
)

// BuildConflictResolvers returns nil, which keeps the catalog's default merge conflict resolution.
func BuildConflictResolvers(_ config.Config, _ block.Adapter) []graveler.ConflictResolver {
	return nil
}

// BuildExtendedOperations returns operations that report "not implemented" (async commit/merge).
func BuildExtendedOperations(_ *catalog.Catalog) catalog.ExtendedOperations {
	return catalog.NewNoopExtendedOperations()
}
