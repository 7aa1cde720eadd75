package tlsconf

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pki is a CA and, signed by it, a server and a client certificate, as
// PEM files.
type pki struct {
	caFile, serverCert, serverKey, clientCert, clientKey string
}

func newPKI(t *testing.T) pki {
	t.Helper()
	dir := t.TempDir()
	caKey, caDER := newCert(t, &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "tlsconf test CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}, nil, nil)
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	leaf := func(serial int64, name string, usage x509.ExtKeyUsage) *x509.Certificate {
		return &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: name},
			DNSNames:     []string{name},
			NotBefore:    time.Now().Add(-time.Hour),
			NotAfter:     time.Now().Add(time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{usage},
		}
	}
	serverKey, serverDER := newCert(t, leaf(2, "server.test", x509.ExtKeyUsageServerAuth), ca, caKey)
	clientKey, clientDER := newCert(t, leaf(3, "client.test", x509.ExtKeyUsageClientAuth), ca, caKey)
	p := pki{
		caFile:     filepath.Join(dir, "ca.pem"),
		serverCert: filepath.Join(dir, "server.pem"),
		serverKey:  filepath.Join(dir, "server-key.pem"),
		clientCert: filepath.Join(dir, "client.pem"),
		clientKey:  filepath.Join(dir, "client-key.pem"),
	}
	writePEM(t, p.caFile, "CERTIFICATE", caDER)
	writePEM(t, p.serverCert, "CERTIFICATE", serverDER)
	writePEM(t, p.serverKey, "PRIVATE KEY", serverKey)
	writePEM(t, p.clientCert, "CERTIFICATE", clientDER)
	writePEM(t, p.clientKey, "PRIVATE KEY", clientKey)
	return p
}

// newCert makes a key and the DER certificate of it, signed by parent
// (self-signed when parent is nil).
func newCert(t *testing.T, tmpl, parent *x509.Certificate, parentKey crypto.Signer) (ed25519.PrivateKey, []byte) {
	t.Helper()
	pub, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	return key, der
}

func writePEM(t *testing.T, path, blockType string, v any) {
	t.Helper()
	var der []byte
	switch v := v.(type) {
	case []byte:
		der = v
	case ed25519.PrivateKey:
		var err error
		if der, err = x509.MarshalPKCS8PrivateKey(v); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: blockType, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// A ca_file that is missing, not PEM, or PEM whose certificate does not
// parse is refused, naming the key and the file.
func TestCAFileErrors(t *testing.T) {
	keyOnly := newPKI(t).clientKey
	dir := filepath.Dir(keyOnly)
	badDER := filepath.Join(dir, "bad-der.pem")
	writePEM(t, badDER, "CERTIFICATE", []byte("not DER"))
	notPEM := filepath.Join(dir, "not.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		file, want string
	}{
		{filepath.Join(dir, "missing.pem"), "tls.ca_file: open " + filepath.Join(dir, "missing.pem") + ": no such file or directory"},
		{notPEM, "tls.ca_file " + notPEM + ": no PEM certificates in it"},
		{badDER, "tls.ca_file " + badDER + ": no PEM certificates in it"},
		{keyOnly, "tls.ca_file " + keyOnly + ": no PEM certificates in it"},
	} {
		tc2, err := Config{CAFile: tc.file}.ClientConfig()
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s: %v, want %q", tc.file, err, tc.want)
		}
		if tc2 != nil {
			t.Errorf("%s: a config with the error", tc.file)
		}
	}
}

// A cert_file without its key_file (or the other way round) is caught by
// Check on tls; ClientConfig refuses it and a key that is not the cert's.
func TestCertWithoutKey(t *testing.T) {
	p := newPKI(t)
	for _, c := range []Config{{CertFile: p.clientCert}, {KeyFile: p.clientKey}} {
		if err := c.Check(); err == nil || err.Error() != "tls: cert_file and key_file go together" {
			t.Errorf("%+v: Check %v", c, err)
		}
	}
	for _, c := range []Config{{}, {CertFile: p.clientCert, KeyFile: p.clientKey}, {CAFile: p.caFile}} {
		if err := c.Check(); err != nil {
			t.Errorf("%+v: Check %v", c, err)
		}
	}
	for _, tc := range []struct {
		c    Config
		want string
	}{
		{Config{CertFile: p.clientCert}, "tls.cert_file/key_file: open : no such file or directory"},
		{Config{CertFile: p.clientCert, KeyFile: p.serverKey}, "tls.cert_file/key_file: tls: private key does not match public key"},
		{Config{CertFile: p.clientKey, KeyFile: p.clientKey}, "tls.cert_file/key_file: tls: failed to find certificate PEM data in certificate input, but did find a private key; PEM inputs may have been switched"},
	} {
		if _, err := tc.c.ClientConfig(); err == nil || err.Error() != tc.want {
			t.Errorf("%+v: %v, want %q", tc.c, err, tc.want)
		}
	}
}

// The config trusts ca_file, shows the client certificate, passes
// server_name and insecure_skip_verify, and asks for TLS 1.2 at least: a
// real handshake with a server that wants the client certificate works up
// to TLS 1.2 and fails with a server that stops at TLS 1.1.
func TestClientConfig(t *testing.T) {
	p := newPKI(t)
	c := Config{CAFile: p.caFile, CertFile: p.clientCert, KeyFile: p.clientKey, ServerName: "server.test"}
	tc, err := c.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	if tc.MinVersion != tls.VersionTLS12 || tc.ServerName != "server.test" || tc.InsecureSkipVerify || len(tc.Certificates) != 1 || tc.RootCAs == nil {
		t.Fatalf("config: min %x, server name %q, insecure %v, %d certificates, roots %v", tc.MinVersion, tc.ServerName, tc.InsecureSkipVerify, len(tc.Certificates), tc.RootCAs)
	}
	if got, _ := (Config{InsecureSkipVerify: true}).ClientConfig(); !got.InsecureSkipVerify || got.RootCAs != nil || got.MinVersion != tls.VersionTLS12 {
		t.Errorf("insecure_skip_verify alone: %+v", got)
	}

	serverCert, err := tls.LoadX509KeyPair(p.serverCert, p.serverKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name          string
		serverMax     uint16
		want          uint16 // 0: the handshake fails on the version
		wantErrSubstr string
	}{
		{"TLS 1.3", tls.VersionTLS13, tls.VersionTLS13, ""},
		{"TLS 1.2", tls.VersionTLS12, tls.VersionTLS12, ""},
		{"TLS 1.1", tls.VersionTLS11, 0, "protocol version not supported"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clientConf, err := c.ClientConfig()
			if err != nil {
				t.Fatal(err)
			}
			roots := x509.NewCertPool()
			caPEM, err := os.ReadFile(p.caFile)
			if err != nil || !roots.AppendCertsFromPEM(caPEM) {
				t.Fatal("ca", err)
			}
			server := &tls.Config{
				Certificates: []tls.Certificate{serverCert},
				ClientAuth:   tls.RequireAndVerifyClientCert,
				ClientCAs:    roots,
				MinVersion:   tls.VersionTLS10,
				MaxVersion:   tc.serverMax,
			}
			clientSide, serverSide := net.Pipe()
			peer := make(chan string, 1)
			go func() {
				defer serverSide.Close()
				sc := tls.Server(serverSide, server)
				if err := sc.Handshake(); err != nil {
					peer <- "server: " + err.Error()
					return
				}
				peer <- sc.ConnectionState().PeerCertificates[0].Subject.CommonName
			}()
			cc := tls.Client(clientSide, clientConf)
			err = cc.Handshake()
			version := cc.ConnectionState().Version
			clientSide.Close()
			serverSaw := <-peer
			if tc.want == 0 {
				if err == nil || !strings.Contains(err.Error(), tc.wantErrSubstr) {
					t.Fatalf("handshake: %v, want %q (server: %s)", err, tc.wantErrSubstr, serverSaw)
				}
				return
			}
			if err != nil {
				t.Fatalf("handshake: %v (%s)", err, serverSaw)
			}
			if version != tc.want || serverSaw != "client.test" {
				t.Errorf("version %x, want %x; the server saw client %q", version, tc.want, serverSaw)
			}
		})
	}
}
