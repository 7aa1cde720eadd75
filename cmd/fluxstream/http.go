package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/internal/metrics"
)

// httpServer serves /metrics, /healthz and /readyz when the config has
// http:. It outlives pipelines: run attaches each one it starts (a
// reload builds a new pipeline; the endpoint stays up meanwhile).
type httpServer struct {
	m    *metrics.Metrics
	srv  *http.Server
	addr string
	done chan struct{}
	log  *slog.Logger
}

// startHTTP listens on cfg.Listen; nil cfg (no http: section) gives a nil
// server, whose methods do nothing. A listen failure is an error: an
// endpoint the operator asked for must not be silently missing.
func startHTTP(cfg *core.HTTPConfig, log *slog.Logger) (*httpServer, error) {
	if cfg == nil {
		return nil, nil
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return nil, fmt.Errorf("http.listen %s: %w", cfg.Listen, err)
	}
	s := &httpServer{
		m:    metrics.New(metrics.Options{UnhealthyAfter: cfg.UnhealthyAfter, Logger: log}),
		addr: ln.Addr().String(),
		done: make(chan struct{}),
		log:  log,
	}
	s.srv = &http.Server{Handler: s.m.Handler(), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	go func() {
		defer close(s.done)
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics and health endpoint stopped", "addr", s.addr, "error", err)
		}
	}()
	log.Info("metrics and health endpoint listening", "addr", s.addr,
		"metrics", "http://"+s.addr+"/metrics", "readyz", "http://"+s.addr+"/readyz")
	return s, nil
}

// Attach reports p from now on (nil: no pipeline).
func (s *httpServer) Attach(p *core.Pipeline) {
	if s != nil {
		s.m.Attach(p)
	}
}

// Close stops serving; scrapes in progress get a second to finish.
func (s *httpServer) Close() {
	if s == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		s.srv.Close()
	}
	<-s.done
}
