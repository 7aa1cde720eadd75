// Package metricstest scrapes a /metrics endpoint over HTTP and reads
// values out of it with Prometheus' own text parser, for tests.
package metricstest

import (
	"fmt"
	"net/http"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Scrape is one scrape: metric families by name.
type Scrape map[string]*dto.MetricFamily

// Get scrapes url (…/metrics) and parses the text format.
func Get(t testing.TB, url string) Scrape {
	t.Helper()
	s, err := Fetch(url)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Fetch is Get returning the error.
func Fetch(url string) (Scrape, error) {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain") // the text format, not protobuf
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", url, err)
	}
	return Scrape(fams), nil
}

// Find returns the sample of name whose labels include every given
// name=value pair (labels: "node", "journal", ...), or nil.
func (s Scrape) Find(name string, labels ...string) *dto.Metric {
	f := s[name]
	if f == nil {
		return nil
	}
next:
	for _, m := range f.Metric {
		for i := 0; i+1 < len(labels); i += 2 {
			found := false
			for _, l := range m.Label {
				if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		return m
	}
	return nil
}

// Value is the counter's or gauge's value of the sample Find returns; ok
// is false if there is none.
func (s Scrape) Value(name string, labels ...string) (v float64, ok bool) {
	m := s.Find(name, labels...)
	switch {
	case m == nil:
		return 0, false
	case m.Counter != nil:
		return m.Counter.GetValue(), true
	case m.Gauge != nil:
		return m.Gauge.GetValue(), true
	case m.Untyped != nil:
		return m.Untyped.GetValue(), true
	}
	return 0, false
}

// Must is Value, failing the test when the sample is missing.
func (s Scrape) Must(t testing.TB, name string, labels ...string) float64 {
	t.Helper()
	v, ok := s.Value(name, labels...)
	if !ok {
		t.Fatalf("no sample %s%v in the scrape", name, labels)
	}
	return v
}

// Histogram returns a histogram sample's count and sum.
func (s Scrape) Histogram(name string, labels ...string) (count uint64, sum float64, ok bool) {
	m := s.Find(name, labels...)
	if m == nil || m.Histogram == nil {
		return 0, 0, false
	}
	return m.Histogram.GetSampleCount(), m.Histogram.GetSampleSum(), true
}
