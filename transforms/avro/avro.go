// Package avro is the `avro` transform: it encodes each record with the
// record schema of package schemas, in the Confluent wire format (the
// schema registered in a schema registry, its id in every value) or in
// Avro single-object encoding. Sinks that ship bytes (kafka) send the
// encoded value; the record itself passes on unchanged otherwise.
package avro

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/twmb/franz-go/pkg/sr"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/internal/logutil"
	"github.com/fluxstream/fluxstream/schemas"
)

// Sample is the sample config.
//
//go:embed sample.yaml
var Sample string

// Register adds the avro transform to r.
func Register(r *core.Registry) {
	r.RegisterTransform("avro", "encode records as Avro (Confluent wire format with a schema registry, or single-object)", New)
}

// Config is the transform's config.
type Config struct {
	// Encoding is "confluent" (magic byte, registry schema id, Avro) or
	// "single-object" (C3 01, schema fingerprint, Avro).
	Encoding string         `yaml:"encoding"`
	Registry RegistryConfig `yaml:"registry"`
}

// RegistryConfig reaches a Confluent-compatible schema registry.
type RegistryConfig struct {
	URLs []string `yaml:"urls"`
	// Subject the schema is registered under. With Confluent's
	// TopicNameStrategy that is "<topic>-value".
	Subject string `yaml:"subject"`
	// Register the schema when the subject lacks it (else only look it
	// up: for registries where only admins register).
	Register bool          `yaml:"register"`
	Username string        `yaml:"username"`
	Password string        `yaml:"password"`
	Timeout  time.Duration `yaml:"timeout"`
	TLS      struct {
		CAFile             string `yaml:"ca_file"`
		CertFile           string `yaml:"cert_file"`
		KeyFile            string `yaml:"key_file"`
		InsecureSkipVerify bool   `yaml:"insecure_skip_verify"`
	} `yaml:"tls"`
}

// Validate checks the decoded config.
func (c *Config) Validate() error {
	var errs []error
	switch c.Encoding {
	case "confluent":
		if len(c.Registry.URLs) == 0 {
			errs = append(errs, core.Fieldf("registry.urls", "the confluent encoding needs a schema registry"))
		}
		if c.Registry.Subject == "" {
			errs = append(errs, core.Fieldf("registry.subject", "must not be empty"))
		}
	case "single-object":
		if len(c.Registry.URLs) > 0 {
			errs = append(errs, core.Fieldf("registry", "single-object encoding uses no registry (the schema fingerprint is in every value)"))
		}
	default:
		errs = append(errs, core.Fieldf("encoding", "unknown encoding %q (confluent, single-object)", c.Encoding))
	}
	if c.Registry.Timeout <= 0 {
		errs = append(errs, core.Fieldf("registry.timeout", "must be positive"))
	}
	return errors.Join(errs...)
}

// Transform encodes records.
type Transform struct {
	cfg      Config
	log      *slog.Logger
	limit    *logutil.Limiter
	redact   *logutil.Redactor
	schemaID int
}

var (
	_ core.Transform   = (*Transform)(nil)
	_ core.Provisioner = (*Transform)(nil)
)

// New decodes the node's config.
func New(nc *core.NodeConfig) (any, error) {
	t := &Transform{cfg: Config{Encoding: "confluent"}}
	t.cfg.Registry.Subject = "fluxstream-record-value"
	t.cfg.Registry.Register = true
	t.cfg.Registry.Timeout = 10 * time.Second
	if err := nc.Decode(&t.cfg); err != nil {
		return nil, err
	}
	// The passwords, and the basic-auth header value they make, which a
	// registry or proxy may echo in an error.
	rc := t.cfg.Registry
	secrets := []string{rc.Password}
	if rc.Password != "" {
		secrets = append(secrets, base64.StdEncoding.EncodeToString([]byte(rc.Username+":"+rc.Password)))
	}
	for _, u := range rc.URLs {
		if pu, err := url.Parse(u); err == nil && pu.User != nil {
			if pass, ok := pu.User.Password(); ok {
				secrets = append(secrets, pass, base64.StdEncoding.EncodeToString([]byte(pu.User.Username()+":"+pass)))
			}
		}
	}
	t.redact = logutil.NewRedactor(secrets...)
	return t, nil
}

// urls is the registry list for messages, passwords redacted.
func (t *Transform) urls() string {
	out := make([]string, len(t.cfg.Registry.URLs))
	for i, u := range t.cfg.Registry.URLs {
		out[i] = t.redact.String(logutil.RedactURL(u))
	}
	return "[" + strings.Join(out, " ") + "]"
}

// SchemaID is the registry id in use (0 before Provision, or without a
// registry).
func (t *Transform) SchemaID() int { return t.schemaID }

// Provision registers (or looks up) the schema. When the registry cannot
// be reached, the id remembered from an earlier run for this very schema
// is used, so a registry outage does not stop the pipeline; without one,
// start-up fails with the registry's answer.
func (t *Transform) Provision(ctx context.Context, nc core.NodeContext) error {
	t.log = nc.Logger
	if t.log == nil {
		t.log = slog.New(slog.DiscardHandler)
	}
	t.limit = logutil.NewLimiter(t.log, logutil.LogEvery, time.Now)
	if t.cfg.Encoding != "confluent" {
		return nil
	}
	if nc.DryRun {
		// No registry is asked in a dry-run; the records still show that
		// a real run sends a schema id.
		t.schemaID = schemas.DryRunSchemaID
		return nil
	}
	cacheKey := []byte("schema-id/" + t.cfg.Registry.Subject + "/" + hex.EncodeToString(schemas.Fingerprint()))
	id, err := t.lookup(ctx)
	if err == nil {
		t.schemaID = id
		if nc.State != nil {
			if err := nc.State.Commit([]core.KVPut{{Key: cacheKey, Value: []byte(strconv.Itoa(id))}}); err != nil {
				t.limit.Log(slog.LevelWarn, "remember", "cannot remember the schema id", "error", t.redact.String(err.Error()))
			}
		}
		t.log.Info("avro schema registered", "subject", t.cfg.Registry.Subject, "id", id)
		return nil
	}
	if nc.State != nil {
		if v, kerr := nc.State.Get(cacheKey); kerr == nil && v != nil {
			if cached, cerr := strconv.Atoi(string(v)); cerr == nil {
				t.schemaID = cached
				t.limit.Log(slog.LevelWarn, "registry", "schema registry unreachable; using the schema id remembered from an earlier run",
					"registry", t.urls(), "subject", t.cfg.Registry.Subject, "id", cached, "error", t.redact.String(err.Error()))
				return nil
			}
		}
	}
	return t.redact.Error(fmt.Errorf("schema registry %s, subject %s: %w", t.urls(), t.cfg.Registry.Subject, err))
}

func (t *Transform) lookup(ctx context.Context) (int, error) {
	rc := t.cfg.Registry
	httpClient := &http.Client{Timeout: rc.Timeout}
	opts := []sr.ClientOpt{sr.URLs(rc.URLs...), sr.HTTPClient(httpClient), sr.UserAgent("fluxstream")}
	if rc.Username != "" {
		opts = append(opts, sr.BasicAuth(rc.Username, rc.Password))
	}
	if rc.TLS.CAFile != "" || rc.TLS.CertFile != "" || rc.TLS.InsecureSkipVerify {
		tc := &tls.Config{InsecureSkipVerify: rc.TLS.InsecureSkipVerify, MinVersion: tls.VersionTLS12}
		if rc.TLS.CAFile != "" {
			pem, err := os.ReadFile(rc.TLS.CAFile)
			if err != nil {
				return 0, fmt.Errorf("registry.tls.ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return 0, fmt.Errorf("registry.tls.ca_file %s: no PEM certificates", rc.TLS.CAFile)
			}
			tc.RootCAs = pool
		}
		if rc.TLS.CertFile != "" {
			cert, err := tls.LoadX509KeyPair(rc.TLS.CertFile, rc.TLS.KeyFile)
			if err != nil {
				return 0, fmt.Errorf("registry.tls: %w", err)
			}
			tc.Certificates = []tls.Certificate{cert}
		}
		httpClient.Transport = &http.Transport{TLSClientConfig: tc}
	}
	cl, err := sr.NewClient(opts...)
	if err != nil {
		return 0, err
	}
	ctx, cancel := context.WithTimeout(ctx, rc.Timeout)
	defer cancel()
	schema := sr.Schema{Schema: schemas.RecordAVSC, Type: sr.TypeAvro}
	if rc.Register {
		ss, err := cl.CreateSchema(ctx, rc.Subject, schema)
		if err != nil {
			return 0, fmt.Errorf("register: %w", err)
		}
		return ss.ID, nil
	}
	ss, err := cl.LookupSchema(ctx, rc.Subject, schema)
	if err != nil {
		return 0, fmt.Errorf("look up (register: false): %w", err)
	}
	return ss.ID, nil
}

// Process encodes r.
func (t *Transform) Process(_ context.Context, r *core.Record) ([]*core.Record, error) {
	var value []byte
	var err error
	format := schemas.FormatConfluent
	if t.cfg.Encoding == "single-object" {
		format = schemas.FormatSingleObject
		value, err = schemas.AppendSingleObject(nil, r)
	} else {
		value, err = schemas.AppendConfluent(nil, t.schemaID, r)
	}
	if err != nil {
		return nil, fmt.Errorf("avro-encode %s: %w", r.ID, err)
	}
	// Both framings wrap the record's own Avro binary: a disk spool keeps
	// the record once, inside value.
	out := r.WithEncoded(&core.Encoded{Format: format, Value: value, SchemaID: t.schemaID, RecordAt: schemas.FramingLen(format)})
	return []*core.Record{out}, nil
}
