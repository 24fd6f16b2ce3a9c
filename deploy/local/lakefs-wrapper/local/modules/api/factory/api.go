// Package factory provides API extensions: extra services, Iceberg sync and
// conditional-write handling.
package factory

import (
	"context"
	"fmt"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/treeverse/lakefs/pkg/api/apigen"
	"github.com/treeverse/lakefs/pkg/auth"
	"github.com/treeverse/lakefs/pkg/authentication"
	"github.com/treeverse/lakefs/pkg/block"
	"github.com/treeverse/lakefs/pkg/catalog"
	"github.com/treeverse/lakefs/pkg/config"
	"github.com/treeverse/lakefs/pkg/graveler"
	"github.com/treeverse/lakefs/pkg/icebergsync"
	"github.com/treeverse/lakefs/pkg/license"
	"github.com/treeverse/lakefs/pkg/logging"
	"github.com/treeverse/lakefs/pkg/stats"
)

// ServiceDependencies is what additional API services may use.
type ServiceDependencies struct {
	Config                config.Config
	Authenticator         auth.Authenticator
	AuthService           auth.Service
	AuthenticationService authentication.Service
	BlockAdapter          block.Adapter
	Collector             stats.Collector
	Logger                logging.Logger
	LicenseManager        license.Manager
}

// RegisterServices registers no additional services.
func RegisterServices(_ context.Context, _ ServiceDependencies, _ *chi.Mux) error {
	return nil
}

// NewIcebergSyncController answers Iceberg pull/push with "not implemented".
func NewIcebergSyncController(_ config.Config) icebergsync.Controller {
	return &icebergsync.NopController{}
}

func unquoteETag(s string) string {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "W/")
	return strings.Trim(s, `"`)
}

// BuildConditionFromParams turns If-Match / If-None-Match request headers into
// a write condition. It always returns a non-nil pointer; the function it points
// to is nil when no header was given (plain, unconditional write).
//   - If-None-Match: "*"   -> write only if the path has no object yet
//   - If-Match: <etag>|"*" -> write only if the current object has that ETag (or exists)
func BuildConditionFromParams(ifMatch, ifNoneMatch *string) (*graveler.ConditionFunc, error) {
	var cond graveler.ConditionFunc
	if ifNoneMatch == nil && ifMatch == nil {
		return &cond, nil
	}
	if ifNoneMatch != nil && strings.TrimSpace(*ifNoneMatch) != "*" {
		return nil, fmt.Errorf("%w: If-None-Match supports only \"*\"", graveler.ErrInvalidValue)
	}
	var wantETag string
	if ifMatch != nil {
		wantETag = unquoteETag(*ifMatch)
		if wantETag == "" {
			return nil, fmt.Errorf("%w: empty If-Match", graveler.ErrInvalidValue)
		}
	}
	cond = catalog.EntryCondition(func(current *catalog.Entry) error {
		if ifNoneMatch != nil && current != nil {
			return fmt.Errorf("%w: object exists", graveler.ErrPreconditionFailed)
		}
		if ifMatch != nil {
			if current == nil {
				return fmt.Errorf("%w: object does not exist", graveler.ErrPreconditionFailed)
			}
			if wantETag != "*" && unquoteETag(current.GetETag()) != wantETag {
				return fmt.Errorf("%w: ETag mismatch", graveler.ErrPreconditionFailed)
			}
		}
		return nil
	})
	return &cond, nil
}

// BuildOptsFromParams maps the copy-object request body to write options.
func BuildOptsFromParams(body apigen.CopyObjectJSONRequestBody) ([]graveler.SetOptionsFunc, error) {
	force := body.Force != nil && *body.Force
	shallow := body.Shallow != nil && *body.Shallow
	return []graveler.SetOptionsFunc{
		graveler.WithForce(force),
		func(o *graveler.SetOptions) { o.Shallow = shallow },
	}, nil
}
