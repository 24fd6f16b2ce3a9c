// Package factory builds the block (object storage) adapter from blockstore.* settings.
package factory

import (
	"context"

	"github.com/treeverse/lakefs/pkg/block"
	pkgfactory "github.com/treeverse/lakefs/pkg/block/factory"
	"github.com/treeverse/lakefs/pkg/config"
	"github.com/treeverse/lakefs/pkg/stats"
)

func BuildBlockAdapter(ctx context.Context, statsCollector stats.Collector, cfg config.Config) (block.Adapter, error) {
	adapterCfg := cfg.StorageConfig().GetStorageByID(config.SingleBlockstoreID)
	if adapterCfg == nil {
		return nil, config.ErrNoStorageConfig
	}
	adapter, err := pkgfactory.BuildBlockAdapter(ctx, statsCollector, adapterCfg)
	if err != nil {
		return nil, err
	}
	return block.NewMetricsAdapter(adapter), nil
}
