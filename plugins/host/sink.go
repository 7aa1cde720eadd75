// Package host is the `plugin` sink type: it runs a sink plugin program
// (hashicorp/go-plugin, gRPC only, AutoMTLS) and is, to the runtime, one
// more core.Sink with its own spool. A plugin that exits, panics, is
// killed or hangs past write_timeout is (killed and) restarted with
// backoff; the batch it did not answer is retried from the spool, so
// nothing is lost. Bad answers (unknown status, a wrong number of
// statuses, oversized messages) are errors naming the plugin, never a
// crash. See README.md.
package host

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/plugins/internal/sinkv1"
)

// Sample is the sample config.
//
//go:embed sample.yaml
var Sample string

// Register adds the plugin sink to r.
func Register(r *core.Registry) {
	r.RegisterSink("plugin", "a sink plugin program over gRPC (hashicorp/go-plugin): see plugins/README.md", New)
}

// FailingAfter is how many failures in a row make the log say the plugin
// keeps failing (at error level, with what it says).
const FailingAfter = 3

// Sink runs one plugin program.
type Sink struct {
	nc   *core.NodeConfig
	cfg  Config
	name string
	log  *slog.Logger
	sp   *spec
	conf []byte // config: as JSON

	mu        sync.Mutex
	p         *proc
	batch     uint64
	backoff   time.Duration
	nextStart time.Time
	failures  int // in a row
	lastErr   error
	closed    bool

	// What Status reports, readable while a Write runs.
	pid      atomic.Int64
	starts   atomic.Int64
	nfail    atomic.Int64
	errMu    sync.Mutex
	lastSeen error
}

var (
	_ core.Sink        = (*Sink)(nil)
	_ core.Provisioner = (*Sink)(nil)
	_ core.Preparer    = (*Sink)(nil)
)

// New decodes the node's config.
func New(nc *core.NodeConfig) (core.Sink, error) {
	s := &Sink{nc: nc, name: nc.Name, cfg: defaults()}
	if err := nc.Decode(&s.cfg); err != nil {
		return nil, err
	}
	conf := s.cfg.Config
	if conf == nil {
		conf = map[string]any{}
	}
	b, err := json.Marshal(normalize(conf))
	if err != nil {
		return nil, nc.Errorf("config", "cannot be passed as JSON: %v", err)
	}
	s.conf = b
	path, err := filepath.Abs(s.cfg.Path)
	if err != nil {
		return nil, nc.Errorf("path", "%v", err)
	}
	s.sp = &spec{path: path, args: s.cfg.Args, env: s.cfg.Env, sha256: strings.ToLower(s.cfg.SHA256),
		startTimeout: s.cfg.StartTimeout, maxMsg: int(s.cfg.MaxMessageBytes)}
	s.backoff = s.cfg.Restart.InitialBackoff
	return s, nil
}

// normalize turns YAML's map[any]any into JSON-able maps.
func normalize(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, x := range t {
			out[k] = normalize(x)
		}
		return out
	case map[any]any:
		out := make(map[string]any, len(t))
		for k, x := range t {
			out[fmt.Sprint(k)] = normalize(x)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, x := range t {
			out[i] = normalize(x)
		}
		return out
	}
	return v
}

// Path is the plugin program.
func (s *Sink) Path() string { return s.sp.path }

// Provision takes the node's logger.
func (s *Sink) Provision(_ context.Context, nc core.NodeContext) error {
	s.log = nc.Logger
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.log = s.log.With("plugin", filepath.Base(s.sp.path))
	s.sp.log = s.log
	return nil
}

func (s *Sink) logger() *slog.Logger {
	if s.log == nil {
		s.Provision(context.Background(), core.NodeContext{})
	}
	return s.log
}

// Prepare starts the plugin before the pipeline: a wrong digest, a
// handshake problem or a config the plugin refuses stops the start, with
// the reason.
func (s *Sink) Prepare(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, err := s.startLocked(ctx)
	return err
}

// startLocked starts the plugin and configures it (s.mu held).
func (s *Sink) startLocked(ctx context.Context) (*proc, error) {
	s.sp.log = s.logger()
	s.starts.Add(1)
	p, err := start(ctx, s.sp)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, s.cfg.StartTimeout)
	defer cancel()
	resp, err := p.sink.Configure(cctx, &sinkv1.ConfigureRequest{ConfigJson: s.conf, Node: s.name, Cluster: ""})
	if err != nil {
		p.kill()
		return nil, &StartError{Path: s.sp.path, Reason: classifyRPC("Configure", err, p.stderr.tail()), Err: err}
	}
	if len(resp.Errors) > 0 {
		p.kill()
		var errs core.ConfigErrors
		for _, e := range resp.Errors {
			key := "config"
			if e.Key != "" {
				key += "." + e.Key
			}
			errs = append(errs, s.nc.Errorf(key, "plugin %s says: %s", p.desc.Name, e.Message))
		}
		return nil, errs
	}
	s.p = p
	s.pid.Store(int64(p.pid))
	s.logger().Info("plugin started", "name", p.desc.Name, "version", p.desc.Version, "pid", p.pid, "protocol", p.desc.ProtocolVersion)
	return p, nil
}

// running returns the running plugin, starting it if needed: after the
// restart backoff when the last one failed.
func (s *Sink) running(ctx context.Context) (*proc, error) {
	if s.p != nil {
		if !s.p.exited() {
			return s.p, nil
		}
		s.gone(fmt.Errorf("plugin %s exited (%s)", s.sp.path, s.p.exitState()))
	}
	if wait := time.Until(s.nextStart); wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
	p, err := s.startLocked(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		s.failed(err)
		return nil, err
	}
	return p, nil
}

// gone forgets a plugin that died and schedules the restart.
func (s *Sink) gone(why error) {
	if s.p != nil {
		s.p.kill()
		s.p = nil
		s.pid.Store(0)
	}
	s.failed(why)
}

// failed counts a failure, backs off the next start and says so: every
// failure at warn level, and from FailingAfter on at error level as
// "plugin keeps failing".
func (s *Sink) failed(err error) {
	s.failures++
	s.lastErr = err
	s.nfail.Store(int64(s.failures))
	s.errMu.Lock()
	s.lastSeen = err
	s.errMu.Unlock()
	s.nextStart = time.Now().Add(s.backoff)
	attrs := []any{"error", err, "failures_in_a_row", s.failures, "restart_in", s.backoff}
	if s.failures >= FailingAfter {
		s.logger().Error("plugin keeps failing; its records stay spooled and are retried, other sinks are not affected", attrs...)
	} else {
		s.logger().Warn("plugin failed; restarting it with backoff (the batch is retried from the spool)", attrs...)
	}
	s.backoff = min(2*s.backoff, s.cfg.Restart.MaxBackoff)
}

func (s *Sink) succeeded() {
	if s.failures > 0 {
		s.logger().Info("plugin recovered", "after_failures", s.failures)
	}
	s.failures = 0
	s.lastErr = nil
	s.nfail.Store(0)
	s.errMu.Lock()
	s.lastSeen = nil
	s.errMu.Unlock()
	s.backoff = s.cfg.Restart.InitialBackoff
}

// Write hands the batch to the plugin and maps its statuses onto a
// core.BatchError. Nothing counts as delivered unless the plugin said OK
// for it.
func (s *Sink) Write(ctx context.Context, batch []*core.Record) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("plugin sink closed")
	}
	p, err := s.running(ctx)
	if err != nil {
		return err
	}
	be := &core.BatchError{}
	for _, chunk := range split(batch, s.sp.maxMsg*3/4, be) {
		if err := s.writeChunk(ctx, p, batch, chunk, be); err != nil {
			return err
		}
	}
	if len(be.Failed) == 0 {
		s.succeeded()
	}
	return be.ErrOrNil()
}

// chunk is a run of batch indexes sent in one Write.
type chunk struct {
	from, to int
	recs     []*sinkv1.Record
}

// split turns the batch into requests below limit bytes; a record too big
// for any request is failed for good in be.
func split(batch []*core.Record, limit int, be *core.BatchError) []chunk {
	var out []chunk
	cur := chunk{}
	size := 0
	for i, r := range batch {
		js, err := r.JSON()
		if err != nil {
			be.Fail(i, core.Permanent(fmt.Errorf("record has no JSON form: %w", err)))
			continue
		}
		pr := &sinkv1.Record{Id: r.ID, Key: r.Key(), Kind: string(r.Kind), Event: r.EventName(), Json: js}
		n := len(js) + len(r.ID) + 64
		if e := r.Encoded; e != nil {
			pr.Encoded = &sinkv1.Encoded{Format: e.Format, Value: e.Value, SchemaId: int32(e.SchemaID), Headers: e.Headers}
			n += len(e.Value)
			for k, v := range e.Headers {
				n += len(k) + len(v) + 8
			}
		}
		if n > limit {
			be.Fail(i, core.Permanent(fmt.Errorf("record of %d bytes is larger than the plugin's max_message_bytes allows", n)))
			continue
		}
		if size+n > limit && len(cur.recs) > 0 {
			out = append(out, cur)
			cur, size = chunk{}, 0
		}
		if len(cur.recs) == 0 {
			cur.from = i
		}
		cur.recs = append(cur.recs, pr)
		cur.to = i + 1
		size += n
	}
	if len(cur.recs) > 0 {
		out = append(out, cur)
	}
	return out
}

// writeChunk sends one request. A non-nil error fails the whole batch
// (retried); per-record outcomes go into be.
func (s *Sink) writeChunk(ctx context.Context, p *proc, batch []*core.Record, c chunk, be *core.BatchError) error {
	s.batch++
	// write_timeout is ours, not a deadline sent along: a plugin that saw
	// it could answer "retry" a moment before it and never count as hung.
	// When it passes, the call is cancelled and the plugin killed.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var timedOut atomic.Bool
	timer := time.AfterFunc(s.cfg.WriteTimeout, func() {
		timedOut.Store(true)
		cancel()
	})
	resp, err := p.sink.Write(wctx, &sinkv1.WriteRequest{Batch: s.batch, Records: c.recs})
	timer.Stop()
	if err != nil {
		switch {
		case ctx.Err() != nil:
			return ctx.Err()
		case timedOut.Load():
			err = fmt.Errorf("plugin %s did not answer a write of %d records within write_timeout %s: killed it (pid %d); restarting, the batch is retried",
				s.sp.path, len(c.recs), s.cfg.WriteTimeout, p.pid)
			s.gone(err)
			return err
		case p.exited() || status.Code(err) == codes.Unavailable:
			// Give the process a moment to be reaped, for the message.
			for i := 0; i < 50 && !p.exited(); i++ {
				time.Sleep(10 * time.Millisecond)
			}
			err = fmt.Errorf("plugin %s died during a write (%s; %s); restarting, the batch is retried",
				s.sp.path, orRunning(p.exitState()), firstLine(status.Convert(err).Message()))
			s.gone(err)
			return err
		}
		err = fmt.Errorf("plugin %s: write failed: %s (the batch is retried)", s.sp.path, firstLine(err.Error()))
		s.failed(err)
		return err
	}
	if len(resp.Statuses) != len(c.recs) {
		err := fmt.Errorf("plugin %s broke the protocol: %d statuses for %d records (the batch is retried)", s.sp.path, len(resp.Statuses), len(c.recs))
		s.failed(err)
		return err
	}
	for i, st := range resp.Statuses {
		switch st.GetStatus() {
		case sinkv1.Status_STATUS_OK, sinkv1.Status_STATUS_RETRY, sinkv1.Status_STATUS_PERMANENT:
		default:
			err := fmt.Errorf("plugin %s broke the protocol: unknown status %d for record %q (the batch is retried)", s.sp.path, int32(st.GetStatus()), batch[c.from+i].ID)
			s.failed(err)
			return err
		}
	}
	for i, st := range resp.Statuses {
		idx := c.from + i
		reason := st.Reason
		if reason == "" {
			reason = "no reason given"
		}
		switch st.Status {
		case sinkv1.Status_STATUS_RETRY:
			be.Fail(idx, fmt.Errorf("plugin %s: retry: %s", p.desc.Name, reason))
		case sinkv1.Status_STATUS_PERMANENT:
			be.Fail(idx, core.Permanent(fmt.Errorf("plugin %s: refused for good: %s", p.desc.Name, reason)))
		}
	}
	return nil
}

func orRunning(s string) string {
	if s == "" {
		return "connection lost"
	}
	return s
}

// Close flushes and closes the plugin, then stops it.
func (s *Sink) Close(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if s.p == nil {
		return nil
	}
	err := s.p.stop(ctx)
	s.p = nil
	s.pid.Store(0)
	if err != nil {
		return fmt.Errorf("plugin %s: %w", s.sp.path, err)
	}
	return nil
}

// Status is what the host knows of its plugin.
type Status struct {
	PID      int   // of the running process, 0 when none runs
	Starts   int   // processes started so far
	Failures int   // failures in a row
	LastErr  error // the last failure, nil after a success
}

// Restarts is how many times the plugin was started again after its first
// start (it exited, hung or failed to start); metrics report it.
func (s *Sink) Restarts() int { return max(int(s.starts.Load())-1, 0) }

// Status reports the plugin's state; it does not wait for a running Write.
func (s *Sink) Status() Status {
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return Status{PID: int(s.pid.Load()), Starts: int(s.starts.Load()), Failures: int(s.nfail.Load()), LastErr: s.lastSeen}
}
