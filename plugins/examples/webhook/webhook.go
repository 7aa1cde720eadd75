// Package webhook is an example sink plugin: it POSTs each batch as NDJSON
// (one record's JSON form per line) to a URL. See README.md; the program
// is cmd/fluxstream-sink-webhook.
//
// Answers: 2xx = every record delivered; 408, 429 and 5xx (and network
// errors, timeouts) = retry the batch; any other 4xx = the batch is
// refused for good (dead-lettered with the status and body). A 207 answer
// carries one JSON line per record it names, {"id":..., "status":N,
// "reason":"..."}, judged the same way; records it does not name were
// delivered.
package webhook

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/fluxstream/fluxstream/plugins/sdk"
)

// Version of the example.
const Version = "1.0.0"

// Config is the node's config: mapping.
type Config struct {
	URL     string            `json:"url"`
	Timeout string            `json:"timeout"` // per POST, default 30s
	Headers map[string]string `json:"headers"`
}

const schema = `{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "type": "object",
  "additionalProperties": false,
  "required": ["url"],
  "properties": {
    "url": {"type": "string", "description": "http(s) URL to POST NDJSON batches to"},
    "timeout": {"type": "string", "description": "per request, e.g. 10s (default 30s)"},
    "headers": {"type": "object", "additionalProperties": {"type": "string"}}
  }
}`

// Sink is the webhook sink.
type Sink struct {
	cfg     Config
	timeout time.Duration
	client  *http.Client
	buf     bytes.Buffer
}

var (
	_ sdk.Sink          = (*Sink)(nil)
	_ sdk.HealthChecker = (*Sink)(nil)
	_ sdk.Closer        = (*Sink)(nil)
)

// Info describes the plugin.
func (s *Sink) Info() sdk.Info {
	return sdk.Info{Name: "webhook", Version: Version, Summary: "POSTs batches of records as NDJSON to a URL", ConfigSchema: schema}
}

// Configure checks the config.
func (s *Sink) Configure(_ context.Context, c sdk.Config) error {
	if err := c.Decode(&s.cfg); err != nil {
		return err
	}
	var errs []error
	if u, err := url.Parse(s.cfg.URL); s.cfg.URL == "" || err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, sdk.Fieldf("url", "want an http:// or https:// URL, got %q", s.cfg.URL))
	}
	s.timeout = 30 * time.Second
	if s.cfg.Timeout != "" {
		d, err := time.ParseDuration(s.cfg.Timeout)
		if err != nil || d <= 0 {
			errs = append(errs, sdk.Fieldf("timeout", "want a positive duration like 10s, got %q", s.cfg.Timeout))
		}
		s.timeout = d
	}
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.MaxIdleConnsPerHost = 4
	s.client = &http.Client{Transport: t}
	return errors.Join(errs...)
}

// Write POSTs the batch.
func (s *Sink) Write(ctx context.Context, recs []sdk.Record) error {
	s.buf.Reset()
	for _, r := range recs {
		s.buf.Write(r.JSON)
		s.buf.WriteByte('\n')
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, s.cfg.URL, bytes.NewReader(s.buf.Bytes()))
	if err != nil {
		return sdk.Permanent(err)
	}
	req.Header.Set("Content-Type", "application/x-ndjson")
	for k, v := range s.cfg.Headers {
		req.Header.Set(k, v)
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return err // retried
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("reading the answer: %w", err)
	}
	if resp.StatusCode == http.StatusMultiStatus {
		return perRecord(recs, body)
	}
	return judge(resp.StatusCode, snippet(body))
}

// judge turns an HTTP status into an outcome.
func judge(code int, why string) error {
	switch {
	case code >= 200 && code < 300:
		return nil
	case code == http.StatusRequestTimeout || code == http.StatusTooManyRequests || code >= 500:
		return fmt.Errorf("HTTP %d: %s", code, why)
	}
	return sdk.Permanent(fmt.Errorf("HTTP %d: %s", code, why))
}

// perRecord reads a 207 answer.
func perRecord(recs []sdk.Record, body []byte) error {
	index := make(map[string][]int, len(recs))
	for i, r := range recs {
		index[r.ID] = append(index[r.ID], i)
	}
	be := &sdk.BatchError{}
	sc := bufio.NewScanner(bytes.NewReader(body))
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		var item struct {
			ID     string `json:"id"`
			Status int    `json:"status"`
			Reason string `json:"reason"`
		}
		if err := json.Unmarshal(line, &item); err != nil {
			return fmt.Errorf("HTTP 207 with a line that is not {\"id\",\"status\"}: %q", snippet(line))
		}
		err := judge(item.Status, item.Reason)
		for _, i := range index[item.ID] {
			if err != nil {
				if sdk.IsPermanent(err) {
					be.Permanent(i, err)
				} else {
					be.Retry(i, err)
				}
			}
		}
	}
	return be.ErrOrNil()
}

func snippet(b []byte) string {
	b = bytes.TrimSpace(b)
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}

// Health checks that the URL's host answers at all.
func (s *Sink) Health(ctx context.Context) error {
	if s.client == nil {
		return errors.New("not configured")
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, s.cfg.URL, nil)
	if err != nil {
		return err
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}

// Close drops idle connections.
func (s *Sink) Close(context.Context) error {
	if s.client != nil {
		s.client.CloseIdleConnections()
	}
	return nil
}
