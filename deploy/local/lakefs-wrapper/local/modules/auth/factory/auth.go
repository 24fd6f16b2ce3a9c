// Package factory builds the authorization service.
package factory

import (
	"context"

	"github.com/treeverse/lakefs/pkg/auth"
	pkgfactory "github.com/treeverse/lakefs/pkg/auth/factory"
	"github.com/treeverse/lakefs/pkg/config"
	"github.com/treeverse/lakefs/pkg/kv"
	"github.com/treeverse/lakefs/pkg/logging"
)

// NewAuthService returns lakeFS's own choice of service: the basic single-admin
// service backed by the KV store (auth.ui_config.rbac: none, the default), or the
// remote auth API when auth.api.endpoint is configured.
func NewAuthService(ctx context.Context, cfg config.Config, logger logging.Logger, kvStore kv.Store, metadataManager *auth.KVMetadataManager) (auth.Service, error) {
	return pkgfactory.NewAuthService(ctx, cfg, logger, kvStore, metadataManager), nil
}
