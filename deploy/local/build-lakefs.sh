#!/usr/bin/env bash
# Build lakeFS from the Go module proxy through a tiny wrapper module.
# Prints the path of the binary as the last (and only) line on stdout; build logs go to stderr.
#
# Why a wrapper: lakeFS's go.mod carries a `replace` directive, which Go only
# honours in the main module, so `go install github.com/treeverse/lakefs/...@v`
# refuses it. The wrapper requires lakeFS and copies the replace line.
#
# Why local modules: lakeFS >= 1.7x requires nested modules (webui and
# modules/*/factory) at pseudo-versions the module proxy refuses to serve, and
# nested modules are not part of the parent module's zip. The wrapper replaces
# each of them with a small local module (written below) that provides the
# exported identifiers lakeFS calls, wired to the open-source defaults in
# lakeFS's own pkg/ packages. The web UI is not built: / serves a short note.
set -euo pipefail
LAKEFS_VERSION="${LAKEFS_VERSION:-v1.80.0}"
CACHE="${KFM_CACHE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)/.cache}"
OUT="$CACHE/bin/lakefs-$LAKEFS_VERSION"
if [[ -x "$OUT" ]]; then echo "$OUT"; exit 0; fi
W="$CACHE/lakefs-wrapper-$LAKEFS_VERSION"
mkdir -p "$W" "$CACHE/bin"
export GOFLAGS="${GOFLAGS:--buildvcs=false} -mod=mod"
export GOPATH="${GOPATH:-$CACHE/gopath}"
cd "$W"
# `go mod download -json` prints where the module's go.mod and source tree are in the cache.
info=$(go mod download -json "github.com/treeverse/lakefs@$LAKEFS_VERSION")
modfile=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])' <<<"$info")
moddir=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])' <<<"$info")
cp "$modfile" upstream.mod
# Upstream's go.sum already pins every dependency (including forks such as
# treeverse/delta-go and treeverse/secret-detector that the checksum DB does not
# know), so no checksum-DB lookups are needed for them.
cp "$moddir/go.sum" go.sum
chmod u+w go.sum
goline=$(grep -m1 '^go ' upstream.mod)

# ---------------------------------------------------------------------------
# Local stand-ins for the nested modules.
# ---------------------------------------------------------------------------
rm -rf local
nested=(webui modules/api/factory modules/auth/factory modules/authentication/factory
  modules/block/factory modules/catalog/factory modules/config/factory
  modules/gateway/factory modules/license/factory)
for m in "${nested[@]}"; do
  mkdir -p "local/$m"
  {
    echo "module github.com/treeverse/lakefs/$m"
    echo
    echo "$goline"
    if [[ $m != webui ]]; then
      echo
      echo "require github.com/treeverse/lakefs $LAKEFS_VERSION"
    fi
  } > "local/$m/go.mod"
done

cat > local/webui/webui.go <<'GO'
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
GO

cat > local/modules/config/factory/config.go <<'GO'
// Package factory builds the lakeFS configuration: the common settings plus the
// built-in auth and UI sections.
package factory

import (
	"fmt"

	"github.com/treeverse/lakefs/pkg/config"
)

// ConfigImpl is the complete configuration read by viper.
type ConfigImpl struct {
	config.BaseConfig `mapstructure:",squash"`
	Auth              config.Auth `mapstructure:"auth"`
	UI                config.UI   `mapstructure:"ui"`
}

func (c *ConfigImpl) AuthConfig() config.AuthConfig { return &c.Auth }

func (c *ConfigImpl) UIConfig() config.UIConfig { return &c.UI }

// Validate checks required keys of every section and the S3 gateway domain names.
func (c *ConfigImpl) Validate() error {
	if err := c.BaseConfig.Validate(); err != nil {
		return err
	}
	if missing := config.ValidateMissingRequiredKeys(&c.Auth, "mapstructure", "squash"); len(missing) > 0 {
		for i := range missing {
			missing[i] = "auth." + missing[i]
		}
		return fmt.Errorf("%w: %v", config.ErrMissingRequiredKeys, missing)
	}
	return c.ValidateDomainNames()
}

// BuildConfig loads the configuration for cfgType ("" for the config file and
// environment, or one of the quickstart / local-settings presets) and validates it.
func BuildConfig(cfgType string) (config.Config, error) {
	c := &ConfigImpl{}
	if _, err := config.NewConfig(cfgType, c); err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}
GO

cat > local/modules/license/factory/license.go <<'GO'
// Package factory provides the license manager: open source needs no license.
package factory

import (
	"context"

	"github.com/treeverse/lakefs/pkg/config"
	"github.com/treeverse/lakefs/pkg/license"
)

func NewLicenseManager(_ context.Context, _ config.Config) (license.Manager, error) {
	return &license.NopLicenseManager{}, nil
}
GO

cat > local/modules/auth/factory/auth.go <<'GO'
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
GO

cat > local/modules/authentication/factory/authentication.go <<'GO'
// Package factory builds authentication: external identity services, login
// tokens and the username/password authenticator chain.
package factory

import (
	"context"
	"time"

	"github.com/treeverse/lakefs/pkg/auth"
	"github.com/treeverse/lakefs/pkg/auth/remoteauthenticator"
	"github.com/treeverse/lakefs/pkg/authentication"
	"github.com/treeverse/lakefs/pkg/config"
	"github.com/treeverse/lakefs/pkg/kv"
	"github.com/treeverse/lakefs/pkg/logging"
)

// NewAuthenticationService uses the external authentication API when
// auth.authentication_api.endpoint is set, otherwise a service that supports none
// of the external flows.
func NewAuthenticationService(_ context.Context, cfg config.Config, logger logging.Logger) (authentication.Service, error) {
	base := cfg.AuthConfig().GetBaseAuthConfig()
	if !base.IsAuthenticationTypeAPI() {
		return authentication.NewDummyService(), nil
	}
	svc, err := authentication.NewAPIService(base.AuthenticationAPI.Endpoint, base.OIDC.ValidateIDTokenClaims,
		logger.WithField("service", "authentication_api"), base.IsExternalPrincipalsEnabled())
	if err != nil {
		return nil, err
	}
	return svc, nil
}

// noLoginTokens is a LoginTokenProvider for builds without browser-based token login.
type noLoginTokens struct{}

func (noLoginTokens) GetRedirect(context.Context) (*authentication.TokenRedirect, error) {
	return nil, authentication.ErrNotImplemented
}

func (noLoginTokens) Release(context.Context, string) error {
	return authentication.ErrNotImplemented
}

func (noLoginTokens) GetToken(context.Context, string) (string, time.Time, error) {
	return "", time.Time{}, authentication.ErrNotImplemented
}

func NewLoginTokenProvider(_ context.Context, _ config.Config, _ logging.Logger, _ kv.Store) (authentication.LoginTokenProvider, error) {
	return noLoginTokens{}, nil
}

// BuildAuthenticatorChain checks access key / secret pairs against the auth
// service, then (if enabled) against the configured remote authenticator.
func BuildAuthenticatorChain(cfg config.Config, logger logging.Logger, authService auth.Service) (auth.Authenticator, error) {
	chain := auth.ChainAuthenticator{auth.NewBuiltinAuthenticator(authService)}
	remote := cfg.AuthConfig().GetBaseAuthConfig().RemoteAuthenticator
	if remote.Enabled {
		ra, err := remoteauthenticator.NewAuthenticator(remoteauthenticator.AuthenticatorConfig{
			Enabled:          remote.Enabled,
			Endpoint:         remote.Endpoint,
			DefaultUserGroup: remote.DefaultUserGroup,
			RequestTimeout:   remote.RequestTimeout,
		}, authService, logger)
		if err != nil {
			return nil, err
		}
		chain = append(chain, ra)
	}
	return chain, nil
}
GO

cat > local/modules/block/factory/block.go <<'GO'
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
GO

cat > local/modules/catalog/factory/catalog.go <<'GO'
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
GO

cat > local/modules/gateway/factory/gateway.go <<'GO'
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
GO

cat > local/modules/api/factory/api.go <<'GO'
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
GO

# ---------------------------------------------------------------------------
# Wrapper module.
# ---------------------------------------------------------------------------
{
  echo "module kfm.local/lakefswrapper"
  echo
  echo "$goline"
  echo
  echo "require github.com/treeverse/lakefs $LAKEFS_VERSION"
  echo
  grep '^replace ' upstream.mod || true
  for m in "${nested[@]}"; do
    echo "replace github.com/treeverse/lakefs/$m => ./local/$m"
  done
} > go.mod
cat > tools.go <<'GO'
//go:build tools

package tools

import _ "github.com/treeverse/lakefs/cmd/lakefs"
GO
# `go mod tidy` would resolve test deps of everything; just pin what the build needs.
go get "github.com/treeverse/lakefs/cmd/lakefs@$LAKEFS_VERSION" >&2
go build -trimpath \
  -ldflags "-s -w -X github.com/treeverse/lakefs/pkg/version.Version=${LAKEFS_VERSION#v}" \
  -o "$OUT.tmp" github.com/treeverse/lakefs/cmd/lakefs >&2
mv "$OUT.tmp" "$OUT"
echo "$OUT"
