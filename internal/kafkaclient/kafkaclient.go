// Package kafkaclient is what the kafka sink and the kafka source share to
// reach the brokers: the tls: and sasl: config blocks, the checks of
// brokers:, tls: and sasl: with the messages naming the key, and the
// franz-go options they make.
package kafkaclient

import (
	"crypto/tls"
	"net"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/internal/logutil"
	"github.com/fluxstream/fluxstream/internal/tlsconf"
)

// TLS is a tls: block: TLS to the brokers (or, in the source, to the
// schema registry). It is tlsconf's block with enabled added, in flat
// fields rather than an embedded tlsconf.Config: core's "did you mean"
// hint for an unknown key lists only a struct's own fields.
type TLS struct {
	Enabled            bool   `yaml:"enabled"`
	CAFile             string `yaml:"ca_file"`
	CertFile           string `yaml:"cert_file"`
	KeyFile            string `yaml:"key_file"`
	ServerName         string `yaml:"server_name"`
	InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
}

// Used reports whether the block asks for TLS: enabled, or a CA or client
// certificate given.
func (t TLS) Used() bool { return t.Enabled || t.CAFile != "" || t.CertFile != "" }

// Shared is the block without enabled.
func (t TLS) Shared() tlsconf.Config {
	return tlsconf.Config{CAFile: t.CAFile, CertFile: t.CertFile, KeyFile: t.KeyFile, ServerName: t.ServerName, InsecureSkipVerify: t.InsecureSkipVerify}
}

// Check reports a cert_file without key_file, or the other way round.
func (t TLS) Check() error { return t.Shared().Check() }

// Config is the crypto/tls config of the block (TLS 1.2 at least). Errors
// name the key.
func (t TLS) Config() (*tls.Config, error) { return t.Shared().ClientConfig() }

// SASL is a sasl: block: authentication to the brokers.
type SASL struct {
	Mechanism string `yaml:"mechanism"` // PLAIN, SCRAM-SHA-256, SCRAM-SHA-512
	Username  string `yaml:"username"`
	Password  string `yaml:"password"` // use ${file:/path} or ${ENV}
}

// CheckMechanism reports an unknown sasl.mechanism.
func (s SASL) CheckMechanism() error {
	switch s.Mechanism {
	case "", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512":
		return nil
	}
	return core.Fieldf("sasl.mechanism", "unknown mechanism %q (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)", s.Mechanism)
}

// Addresses says how CheckBrokers checks each address.
type Addresses int

const (
	// AnyAddress refuses only credentials in an address.
	AnyAddress Addresses = iota
	// HostPort also refuses an address that is not host:port.
	HostPort
)

// CheckBrokers reports what is wrong with brokers:, in list order: none
// listed, credentials in an address (shown redacted: they belong in
// sasl:), and with HostPort an address that is not host:port.
func CheckBrokers(brokers []string, addrs Addresses) []error {
	var errs []error
	if len(brokers) == 0 {
		errs = append(errs, core.Fieldf("brokers", "must list at least one broker (host:port)"))
	}
	for _, b := range brokers {
		if strings.Contains(b, "@") {
			errs = append(errs, core.Fieldf("brokers", "%q: credentials do not belong in a broker address (use sasl:)", logutil.RedactURL(b)))
			continue
		}
		if addrs == HostPort {
			if _, port, err := net.SplitHostPort(b); err != nil || port == "" {
				errs = append(errs, core.Fieldf("brokers", "%q is not host:port", logutil.RedactURL(b)))
			}
		}
	}
	return errs
}

// Conn is how to reach the brokers.
type Conn struct {
	Brokers     []string
	ClientID    string
	DialTimeout time.Duration
	TLS         TLS
	SASL        SASL
}

// Options are the franz-go options that reach and authenticate to the
// brokers: seed brokers, client id, dial timeout, TLS and SASL.
func (c Conn) Options() ([]kgo.Opt, error) {
	opts := []kgo.Opt{
		kgo.SeedBrokers(c.Brokers...),
		kgo.ClientID(c.ClientID),
		kgo.DialTimeout(c.DialTimeout),
	}
	if c.TLS.Used() {
		tc, err := c.TLS.Config()
		if err != nil {
			return nil, err
		}
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	user, pass := c.SASL.Username, c.SASL.Password
	switch c.SASL.Mechanism {
	case "PLAIN":
		opts = append(opts, kgo.SASL(plain.Auth{User: user, Pass: pass}.AsMechanism()))
	case "SCRAM-SHA-256":
		opts = append(opts, kgo.SASL(scram.Auth{User: user, Pass: pass}.AsSha256Mechanism()))
	case "SCRAM-SHA-512":
		opts = append(opts, kgo.SASL(scram.Auth{User: user, Pass: pass}.AsSha512Mechanism()))
	}
	return opts, nil
}
