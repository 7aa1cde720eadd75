package host

import (
	"encoding/hex"
	"errors"
	"time"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/plugins/internal/wire"
)

// Config is the `plugin` sink's config.
type Config struct {
	// Path is the plugin program (absolute, or relative to the working
	// directory). A script with a #! line works: sha256 is then the
	// script's.
	Path string   `yaml:"path"`
	Args []string `yaml:"args"`
	// SHA256 is the program's digest (sha256sum PATH), checked before
	// every start; a mismatch refuses to start it.
	SHA256 string `yaml:"sha256"`
	// Env adds variables to the plugin's environment (it inherits
	// fluxstream's).
	Env map[string]string `yaml:"env"`
	// Config is handed to the plugin, as JSON, in Configure.
	Config map[string]any `yaml:"config"`
	// WriteTimeout bounds one Write: a plugin that does not answer in
	// time is killed and restarted, and the batch is retried.
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// StartTimeout bounds the start: handshake, Describe, Configure.
	StartTimeout time.Duration `yaml:"start_timeout"`
	// Restart is the backoff between starts of a plugin that exited,
	// crashed, hung or could not start.
	Restart RestartConfig `yaml:"restart"`
	// MaxMessageBytes bounds one gRPC message either way: bigger batches
	// are split, a bigger answer is an error.
	MaxMessageBytes core.ByteSize `yaml:"max_message_bytes"`
}

// RestartConfig is the restart backoff.
type RestartConfig struct {
	InitialBackoff time.Duration `yaml:"initial_backoff"`
	MaxBackoff     time.Duration `yaml:"max_backoff"`
}

func defaults() Config {
	return Config{
		WriteTimeout:    30 * time.Second,
		StartTimeout:    20 * time.Second,
		Restart:         RestartConfig{InitialBackoff: 100 * time.Millisecond, MaxBackoff: 10 * time.Second},
		MaxMessageBytes: wire.MaxMessageBytes,
	}
}

// Validate checks the decoded config.
func (c *Config) Validate() error {
	var errs []error
	if c.Path == "" {
		errs = append(errs, core.Fieldf("path", "must name the plugin program"))
	}
	if b, err := hex.DecodeString(c.SHA256); err != nil || len(b) != 32 {
		msg := "must be the program's SHA-256 digest, 64 hex digits (sha256sum PATH, or fluxstream plugins check PATH)"
		if c.SHA256 == "" {
			msg = "must be set: " + msg
		}
		errs = append(errs, core.Fieldf("sha256", "%s", msg))
	}
	if c.WriteTimeout <= 0 {
		errs = append(errs, core.Fieldf("write_timeout", "must be positive"))
	}
	if c.StartTimeout <= 0 {
		errs = append(errs, core.Fieldf("start_timeout", "must be positive"))
	}
	if c.Restart.InitialBackoff <= 0 || c.Restart.MaxBackoff < c.Restart.InitialBackoff {
		errs = append(errs, core.Fieldf("restart", "initial_backoff must be positive and max_backoff at least as long"))
	}
	if c.MaxMessageBytes < 64<<10 || c.MaxMessageBytes > wire.MaxMessageBytes {
		errs = append(errs, core.Fieldf("max_message_bytes", "must be between 64KiB and 64MiB, got %s", c.MaxMessageBytes))
	}
	return errors.Join(errs...)
}
