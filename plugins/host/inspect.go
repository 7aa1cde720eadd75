package host

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/fluxstream/fluxstream/plugins/internal/sinkv1"
	"github.com/fluxstream/fluxstream/plugins/internal/wire"
)

// Description is a plugin's Describe answer, with what the host saw.
type Description struct {
	Path            string
	SHA256          string
	Name            string
	Version         string
	Summary         string
	ProtocolVersion int
	ConfigSchema    string // JSON Schema text, may be ""
}

// Health is a plugin's Health answer.
type Health struct {
	OK      bool
	Message string
}

func describe(p *proc, sum string) *Description {
	return &Description{Path: p.spec.path, SHA256: sum, Name: p.desc.Name, Version: p.desc.Version,
		Summary: p.desc.Summary, ProtocolVersion: int(p.desc.ProtocolVersion), ConfigSchema: p.desc.ConfigSchema}
}

// Check starts the program at path without a digest to compare, runs the
// handshake and Describe, and stops it. Its error is a *StartError whose
// Reason says in one line what is wrong (wrong magic cookie, another
// protocol version, junk on stdout, no gRPC, ...).
func Check(ctx context.Context, path string, args []string, log *slog.Logger) (*Description, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	sum, err := FileSHA256(abs)
	if err != nil {
		return nil, &StartError{Path: abs, Reason: fmt.Sprintf("cannot read the program: %v", err), Err: err}
	}
	p, err := start(ctx, &spec{path: abs, args: args, startTimeout: 20 * time.Second, maxMsg: wire.MaxMessageBytes, log: log})
	if err != nil {
		return nil, err
	}
	defer p.stop(ctx)
	return describe(p, sum), nil
}

// Inspect starts a process of the configured plugin of its own (the
// digest checked), configures it, asks for its health and stops it.
func (s *Sink) Inspect(ctx context.Context) (*Description, *Health, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, err := s.startLocked(ctx)
	if err != nil {
		return nil, nil, err
	}
	s.p = nil
	s.pid.Store(0)
	defer p.stop(ctx)
	d := describe(p, s.sp.sha256)
	hctx, cancel := context.WithTimeout(ctx, s.cfg.StartTimeout)
	defer cancel()
	resp, err := p.sink.Health(hctx, &sinkv1.HealthRequest{})
	if err != nil {
		return d, nil, fmt.Errorf("plugin %s: Health: %w", s.sp.path, err)
	}
	return d, &Health{OK: resp.Ok, Message: resp.Message}, nil
}
