package kafkaclient

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fluxstream/fluxstream/core"
)

func TestCheckBrokers(t *testing.T) {
	brokers := []string{"u:hunter22@kafka1:9092", "kafka2", "kafka3:9092"}
	got := errors.Join(CheckBrokers(brokers, HostPort)...).Error()
	want := `brokers: "u:xxxxx@kafka1:9092": credentials do not belong in a broker address (use sasl:)` + "\n" +
		`brokers: "kafka2" is not host:port`
	if got != want {
		t.Errorf("HostPort:\n%s\nwant\n%s", got, want)
	}
	got = errors.Join(CheckBrokers(brokers, AnyAddress)...).Error()
	if want, _, _ := strings.Cut(want, "\n"); got != want {
		t.Errorf("AnyAddress:\n%s\nwant\n%s", got, want)
	}
	if errs := CheckBrokers(nil, AnyAddress); len(errs) != 1 || errs[0].Error() != "brokers: must list at least one broker (host:port)" {
		t.Errorf("none: %v", errs)
	}
}

func TestCheckMechanism(t *testing.T) {
	for _, m := range []string{"", "PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"} {
		if err := (SASL{Mechanism: m}).CheckMechanism(); err != nil {
			t.Errorf("%q: %v", m, err)
		}
	}
	err := SASL{Mechanism: "GSSAPI"}.CheckMechanism()
	if err == nil || err.Error() != `sasl.mechanism: unknown mechanism "GSSAPI" (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)` {
		t.Errorf("GSSAPI: %v", err)
	}
}

// Bad files are refused at Options, naming the key; TLS is used only when
// the block asks for it.
func TestTLSErrors(t *testing.T) {
	dir := t.TempDir()
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		tls  TLS
		want string
	}{
		{TLS{CAFile: filepath.Join(dir, "missing.pem")}, "tls.ca_file: open "},
		{TLS{CAFile: notPEM}, "tls.ca_file " + notPEM + ": no PEM certificates in it"},
		{TLS{CertFile: notPEM, KeyFile: notPEM}, "tls.cert_file/key_file: "},
	} {
		_, err := Conn{Brokers: []string{"kafka1:9092"}, TLS: tc.tls}.Options()
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q...", tc.tls, err, tc.want)
		}
	}
	if err := (TLS{Enabled: true, CertFile: notPEM}).Check(); err == nil || err.Error() != "tls: cert_file and key_file go together" {
		t.Errorf("Check: %v", err)
	}
	if (TLS{ServerName: "kafka1"}).Used() || !(TLS{Enabled: true}).Used() || !(TLS{CAFile: notPEM}).Used() {
		t.Error("Used")
	}
}

// The keys of tls: are TLS's own fields, so that a misspelt one gets the
// hint (it would not through an embedded, squashed tlsconf.Config).
func TestTLSKeys(t *testing.T) {
	nc, err := core.ParseNodeConfig("sink", "k", []byte("tls: {enabled: true, ca_fil: /ca.pem, server_name: kafka1}\n"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		TLS TLS `yaml:"tls"`
	}
	err = nc.Decode(&cfg)
	if want := `k.yaml:1: sinks.k.tls.ca_fil: unknown key (did you mean "ca_file"?)`; err == nil || err.Error() != want {
		t.Errorf("%v, want %s", err, want)
	}
	if !cfg.TLS.Enabled || cfg.TLS.ServerName != "kafka1" {
		t.Errorf("decoded %+v", cfg.TLS)
	}
}
