// Package coretest has small helpers for tests of components: a sink that
// keeps what it receives, a quiet logger, a log buffer safe to read while
// it is written, and DAG building from YAML. Only tests import it.
package coretest

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"sync"
	"testing"

	"github.com/fluxstream/fluxstream/core"
)

// Collector is a sink that keeps every record it is given.
type Collector struct {
	mu   sync.Mutex
	recs []*core.Record
}

var _ core.Sink = (*Collector)(nil)

// Write keeps the batch.
func (c *Collector) Write(_ context.Context, batch []*core.Record) error {
	c.mu.Lock()
	c.recs = append(c.recs, batch...)
	c.mu.Unlock()
	return nil
}

// Close does nothing.
func (c *Collector) Close(context.Context) error { return nil }

// All returns what was written so far, in order.
func (c *Collector) All() []*core.Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*core.Record(nil), c.recs...)
}

// Register adds the collector to r as sink type "collect".
func (c *Collector) Register(r *core.Registry) {
	r.RegisterSink("collect", "keeps records, for tests", func(nc *core.NodeConfig) (core.Sink, error) {
		return c, nc.Decode(&struct{}{})
	})
}

// SyncBuffer is a bytes.Buffer behind a mutex: a log or a process's
// stderr writes it while the test reads it.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Len is how many bytes were written so far.
func (s *SyncBuffer) Len() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Len()
}

// Quiet is a logger that drops everything.
func Quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// Build loads yaml and builds its DAG with reg, failing the test on error.
func Build(t testing.TB, reg *core.Registry, yaml string) *core.Graph {
	t.Helper()
	cfg, err := core.LoadConfig("test.yaml", []byte(yaml), core.LoadOptions{Environ: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	g, err := core.Build(cfg, reg)
	if err != nil {
		t.Fatal(err)
	}
	return g
}
