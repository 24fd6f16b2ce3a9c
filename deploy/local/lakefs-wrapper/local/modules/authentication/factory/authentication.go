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
