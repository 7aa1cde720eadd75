// Package elasticsearch is the `elasticsearch` sink: Elasticsearch 8.x and
// OpenSearch 2.x through go-elasticsearch's esapi requests over
// elastictransport (not the v8 client, whose product check refuses
// OpenSearch). Two document kinds: the events index (one document per
// event, _id = record id, action create) and the jobs index (one document
// per job, its latest snapshot, action index with version_type=external
// and the event time as version, so that an older snapshot redelivered
// late is refused). Documents follow a profile: native, ecs or slurm.
// Templates are installed by Prepare. See README.md.
package elasticsearch

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/elastic/elastic-transport-go/v8/elastictransport"
	"github.com/elastic/go-elasticsearch/v8/esapi"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/internal/logutil"
)

// Sample is the sample config.
//
//go:embed sample.yaml
var Sample string

// Register adds the elasticsearch sink to r.
func Register(r *core.Registry) {
	r.RegisterSink("elasticsearch", "Elasticsearch 8 / OpenSearch 2: events and jobs indices (native, ecs, slurm profiles)", New)
}

// Sink writes to Elasticsearch or OpenSearch.
type Sink struct {
	cfg    Config
	name   string
	log    *slog.Logger
	limit  *logutil.Limiter
	redact *logutil.Redactor
	tp     *elastictransport.Client
	hc     *http.Transport

	mu        sync.Mutex
	ready     bool      // templates installed, server checked
	lastWrite time.Time // end of the last write (flush.interval)
	now       func() time.Time
}

var (
	_ core.Sink        = (*Sink)(nil)
	_ core.Provisioner = (*Sink)(nil)
	_ core.Preparer    = (*Sink)(nil)
	_ core.DryRunner   = (*Sink)(nil)
)

// New decodes the node's config.
func New(nc *core.NodeConfig) (core.Sink, error) {
	s := &Sink{name: nc.Name, cfg: defaults(), now: time.Now}
	if err := nc.Decode(&s.cfg); err != nil {
		return nil, err
	}
	s.redact = logutil.NewRedactor(s.cfg.Password, s.cfg.APIKey, s.cfg.BearerToken)
	return s, nil
}

// Config returns the decoded config.
func (s *Sink) Config() Config { return s.cfg }

// Provision reads the credentials and builds the transport (it connects
// lazily).
func (s *Sink) Provision(_ context.Context, nc core.NodeContext) error {
	s.log = nc.Logger
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.limit = logutil.NewLimiter(s.log, logutil.LogEvery, time.Now)
	if nc.DryRun {
		return nil
	}
	tp, hc, err := s.cfg.transport()
	if err != nil {
		return s.redact.Error(err)
	}
	s.tp, s.hc = tp, hc
	return nil
}

// transport builds the elastictransport client of the config. Retries
// are ours (Write), not the transport's.
func (c *Config) transport() (*elastictransport.Client, *http.Transport, error) {
	var urls []*url.URL
	for _, a := range c.Addresses {
		u, err := url.Parse(a)
		if err != nil {
			return nil, nil, fmt.Errorf("addresses: %w", err)
		}
		urls = append(urls, u)
	}
	tc, err := c.TLS.ClientConfig()
	if err != nil {
		return nil, nil, err
	}
	hc := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       tc,
		TLSHandshakeTimeout:   10 * time.Second,
		MaxIdleConnsPerHost:   c.InFlight + 2,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: c.RequestTimeout,
		ForceAttemptHTTP2:     true,
	}
	ec := elastictransport.Config{
		URLs:                urls,
		Transport:           hc,
		DisableRetry:        true,
		CompressRequestBody: c.Compress,
		UserAgent:           "fluxstream",
	}
	if c.Username != "" {
		ec.Username = c.Username
		if ec.Password, err = secret(c.Password, c.PasswordFile); err != nil {
			return nil, nil, fmt.Errorf("password_file: %w", err)
		}
	}
	if c.APIKey != "" || c.APIKeyFile != "" {
		if ec.APIKey, err = secret(c.APIKey, c.APIKeyFile); err != nil {
			return nil, nil, fmt.Errorf("api_key_file: %w", err)
		}
	}
	if c.BearerToken != "" || c.BearerTokenFile != "" {
		if ec.ServiceToken, err = secret(c.BearerToken, c.BearerTokenFile); err != nil {
			return nil, nil, fmt.Errorf("bearer_token_file: %w", err)
		}
	}
	tp, err := elastictransport.New(ec)
	return tp, hc, err
}

// fatalError is a Prepare failure a retry cannot fix.
type fatalError struct{ error }

// ensureReady checks the server once and installs the templates.
func (s *Sink) ensureReady(ctx context.Context) error {
	s.mu.Lock()
	ready := s.ready
	s.mu.Unlock()
	if ready {
		return nil
	}
	if err := s.checkServer(ctx); err != nil {
		return err
	}
	if s.cfg.templatesOn() {
		for _, t := range s.cfg.templates() {
			if err := s.put(ctx, t.path, t.body); err != nil {
				return err
			}
		}
	}
	s.mu.Lock()
	s.ready = true
	s.mu.Unlock()
	return nil
}

func (s *Sink) addresses() string { return logutil.RedactURL(strings.Join(s.cfg.Addresses, ",")) }

// checkServer asks GET / and checks the flavor.
func (s *Sink) checkServer(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	res, err := esapi.InfoRequest{}.Do(ctx, s.tp)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	if res.StatusCode == 401 || res.StatusCode == 403 {
		return fatalError{fmt.Errorf("%s refused the credentials: %s %s", s.addresses(), res.Status(), reason(body))}
	}
	if res.StatusCode >= 300 {
		return fmt.Errorf("%s: GET / answered %s %s", s.addresses(), res.Status(), reason(body))
	}
	var info struct {
		Version struct {
			Number       string `json:"number"`
			Distribution string `json:"distribution"`
		} `json:"version"`
	}
	json.Unmarshal(body, &info)
	product := res.Header.Get("X-Elastic-Product")
	switch s.cfg.Flavor {
	case "elasticsearch":
		if product != "Elasticsearch" {
			what := "not Elasticsearch"
			if info.Version.Distribution == "opensearch" {
				what = "OpenSearch " + info.Version.Number
			}
			return fatalError{fmt.Errorf("%s is %s (no X-Elastic-Product: Elasticsearch header); set flavor: opensearch for OpenSearch", s.addresses(), what)}
		}
	case "opensearch":
		if product == "Elasticsearch" || (info.Version.Distribution != "opensearch" && info.Version.Number != "") {
			return fatalError{fmt.Errorf("%s is Elasticsearch %s, not OpenSearch; set flavor: elasticsearch", s.addresses(), info.Version.Number)}
		}
	}
	return nil
}

// put sends a template.
func (s *Sink) put(ctx context.Context, path string, body any) error {
	js, err := json.Marshal(body)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, path, bytes.NewReader(js))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	res, err := s.tp.Perform(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	rb, _ := io.ReadAll(io.LimitReader(res.Body, 1<<20))
	switch {
	case res.StatusCode == 401 || res.StatusCode == 403:
		return fatalError{fmt.Errorf("PUT %s: %s %s (the user needs manage_index_templates)", path, res.Status, reason(rb))}
	case res.StatusCode == 400:
		return fatalError{fmt.Errorf("PUT %s refused: %s", path, reason(rb))}
	case res.StatusCode >= 300:
		return fmt.Errorf("PUT %s: %s %s", path, res.Status, reason(rb))
	}
	return nil
}

// reason extracts error.type and error.reason of an answer.
func reason(body []byte) string {
	var e struct {
		Error json.RawMessage `json:"error"`
	}
	if json.Unmarshal(body, &e) == nil && len(e.Error) > 0 {
		var d errDetail
		if json.Unmarshal(e.Error, &d) == nil && d.Type != "" {
			return d.String()
		}
		return string(e.Error)
	}
	if len(body) > 300 {
		body = body[:300]
	}
	return strings.TrimSpace(string(body))
}

// Prepare checks the server and installs the templates before the
// pipeline starts. Wrong credentials, the wrong flavor and a refused
// template stop the start; a server that is merely down is logged, and
// the first write installs the templates once it answers.
func (s *Sink) Prepare(ctx context.Context) error {
	err := s.ensureReady(ctx)
	if err == nil {
		return nil
	}
	var fe fatalError
	if errors.As(err, &fe) {
		return s.redact.Error(fmt.Errorf("elasticsearch %s: %w", s.addresses(), fe.error))
	}
	s.limit.Log(slog.LevelError, "unreachable", "elasticsearch unreachable at start; records are spooled and sent when it answers",
		"addresses", s.addresses(), "error", s.redact.String(err.Error()))
	return nil
}

// DryRun prints the bulk request the batch would make.
func (s *Sink) DryRun(_ context.Context, batch []*core.Record, w io.Writer) error {
	items, _ := s.items(batch)
	for _, it := range items {
		if it.kind == kindPurge { // the real action reads the stored document first
			at := it.purge.Purge.Time
			it.meta = actionLine("index", it.index, it.key, map[string]any{"version": "stored+1", "version_type": "external"})
			it.body = append(purgeFields(it.purge, at), '\n')
		}
		if _, err := w.Write(it.meta); err != nil {
			return err
		}
		if _, err := w.Write(it.body); err != nil {
			return err
		}
	}
	return nil
}

// Close releases idle connections.
func (s *Sink) Close(context.Context) error {
	if s.hc != nil {
		s.hc.CloseIdleConnections()
	}
	if s.limit != nil {
		s.limit.Flush()
	}
	return nil
}
