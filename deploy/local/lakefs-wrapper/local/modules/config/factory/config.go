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
