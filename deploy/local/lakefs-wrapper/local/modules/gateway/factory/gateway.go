// Package factory provides extra S3 gateway middleware; open source adds none.
package factory

import (
	"context"
	"net/http"

	"github.com/treeverse/lakefs/pkg/config"
	"github.com/treeverse/lakefs/pkg/logging"
)

type MiddlewareFactory struct{}

// Build returns nil: no extra middleware around the gateway handler.
func (MiddlewareFactory) Build() func(http.Handler) http.Handler { return nil }

func BuildMiddleware(_ context.Context, _ config.Config, _ logging.Logger) (MiddlewareFactory, error) {
	return MiddlewareFactory{}, nil
}
