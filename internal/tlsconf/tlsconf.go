// Package tlsconf is the tls: block that the sinks and sources share (the
// elasticsearch sink; the kafka sink and source through kafkaclient): its
// keys, the check that a client certificate comes with its key, and the
// crypto/tls client config it makes. Errors name the key.
package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/fluxstream/fluxstream/core"
)

// Config is a tls: block: how a client checks the server and shows itself.
type Config struct {
	CAFile     string `yaml:"ca_file"`
	CertFile   string `yaml:"cert_file"`
	KeyFile    string `yaml:"key_file"`
	ServerName string `yaml:"server_name"`
	// InsecureSkipVerify turns certificate checks off; only when set.
	InsecureSkipVerify bool `yaml:"insecure_skip_verify"`
}

// Check reports a cert_file without key_file, or the other way round.
func (c Config) Check() error {
	if (c.CertFile == "") != (c.KeyFile == "") {
		return core.Fieldf("tls", "cert_file and key_file go together")
	}
	return nil
}

// ClientConfig reads the files and makes the crypto/tls client config
// (TLS 1.2 at least; the system roots without ca_file).
func (c Config) ClientConfig() (*tls.Config, error) {
	tc := &tls.Config{ServerName: c.ServerName, InsecureSkipVerify: c.InsecureSkipVerify, MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("tls.ca_file %s: no PEM certificates in it", c.CAFile)
		}
		tc.RootCAs = pool
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("tls.cert_file/key_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	return tc, nil
}
