package core

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
)

// RunOptions adjust a pipeline run.
type RunOptions struct {
	Logger *slog.Logger
	// DataDir overrides the config's data_dir.
	DataDir string
	// DryRun runs the same DAG without durable state: every sink prints,
	// labelled with its name, what it would send, to DryRunOut.
	DryRun    bool
	DryRunOut io.Writer
	// ShutdownTimeout overrides the config's shutdown_timeout.
	ShutdownTimeout time.Duration
}

// DefaultShutdownTimeout bounds how long sinks may drain on shutdown.
const DefaultShutdownTimeout = 30 * time.Second

// DefaultDataDir is where state lives when the config names no data_dir:
// $STATE_DIRECTORY (systemd's StateDirectory=), else the user's state dir.
func DefaultDataDir() string {
	if d := os.Getenv("STATE_DIRECTORY"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "fluxstream")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "state", "fluxstream")
	}
	return "fluxstream-data"
}

// Pipeline runs a built Graph.
type Pipeline struct {
	g       *Graph
	opts    RunOptions
	log     *slog.Logger
	dataDir string
	state   *StateDB
	rt      map[*Node]*nodeRuntime
	dryMu   sync.Mutex
}

type nodeRuntime struct {
	node   *Node
	log    *slog.Logger
	stats  SinkStats
	runner atomic.Pointer[sinkRunner] // sinks only, nil in dry-run
	// rate-limit for per-record error logs
	mu       sync.Mutex
	lastWarn time.Time
	muted    int
}

// NewPipeline prepares a run of g; nothing is opened until Run.
func NewPipeline(g *Graph, opts RunOptions) *Pipeline {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.DryRunOut == nil {
		opts.DryRunOut = os.Stdout
	}
	if opts.ShutdownTimeout == 0 {
		opts.ShutdownTimeout = g.Config.ShutdownTimeout
	}
	if opts.ShutdownTimeout == 0 {
		opts.ShutdownTimeout = DefaultShutdownTimeout
	}
	dataDir := opts.DataDir
	if dataDir == "" {
		dataDir = g.Config.DataDir
	}
	if dataDir == "" {
		dataDir = DefaultDataDir()
	}
	p := &Pipeline{g: g, opts: opts, log: opts.Logger, dataDir: dataDir, rt: map[*Node]*nodeRuntime{}}
	for _, n := range g.Nodes {
		p.rt[n] = &nodeRuntime{node: n, log: opts.Logger.With(n.Kind, n.Name)}
	}
	return p
}

// DataDir is the directory holding checkpoints and spools.
func (p *Pipeline) DataDir() string { return p.dataDir }

// Stats returns the counters of every node.
func (p *Pipeline) Stats() []StatsSnapshot {
	out := make([]StatsSnapshot, 0, len(p.g.Nodes))
	for _, n := range p.g.Nodes {
		rt := p.rt[n]
		s := StatsSnapshot{Node: n.Name, Kind: n.Kind,
			In: rt.stats.In.Load(), Out: rt.stats.Out.Load(), Dropped: rt.stats.Dropped.Load(), Errors: rt.stats.Errors.Load(),
			Retries: rt.stats.Retries.Load(), DeadLettered: rt.stats.DeadLettered.Load(), BufferDropped: rt.stats.BufferDropped.Load()}
		if r := rt.runner.Load(); r != nil {
			s.PendingRecords, s.PendingBytes = r.buf.Pending()
		}
		out = append(out, s)
	}
	return out
}

// Run provisions every node, runs the sources until they finish or ctx
// ends, then shuts down: sources stop, sinks drain (bounded by the
// shutdown timeout once ctx has ended), everything is flushed and closed.
// What a sink could not deliver stays in its spool for the next run.
func (p *Pipeline) Run(ctx context.Context) (err error) {
	defer func() {
		if cerr := p.closeAll(); err == nil {
			err = cerr
		}
	}()
	if err := p.provision(ctx); err != nil {
		return err
	}

	sinkCtx, cancelSinks := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelSinks()
	var sinkWG sync.WaitGroup
	for _, n := range p.g.Sinks() {
		if r := p.rt[n].runner.Load(); r != nil {
			sinkWG.Add(1)
			go func() {
				defer sinkWG.Done()
				r.run(sinkCtx)
			}()
		}
	}

	srcCtx, cancelSources := context.WithCancel(ctx)
	defer cancelSources()
	type result struct {
		n   *Node
		err error
	}
	results := make(chan result, len(p.g.Sources()))
	for _, n := range p.g.Sources() {
		em := newEmitter(srcCtx, p, n)
		go func() {
			err := n.Impl.(Source).Run(srcCtx, em)
			// What was emitted still goes through the DAG before the
			// sinks are told no more comes.
			if ferr := em.finish(); err == nil && ferr != nil && srcCtx.Err() == nil {
				err = ferr
			}
			results <- result{n, err}
		}()
	}
	var runErr error
	for range p.g.Sources() {
		res := <-results
		switch {
		case res.err == nil:
			p.rt[res.n].log.Info("source finished")
		case errors.Is(res.err, context.Canceled) && srcCtx.Err() != nil:
		default:
			p.rt[res.n].log.Error("source failed; shutting down", "error", res.err)
			if runErr == nil {
				runErr = fmt.Errorf("source %s: %w", res.n.Name, res.err)
			}
			cancelSources()
		}
	}

	// Drain: sinks deliver what they hold. After a signal or a failure the
	// drain is bounded; after a finite source ran out, it is complete
	// unless a signal comes.
	for _, n := range p.g.Sinks() {
		if r := p.rt[n].runner.Load(); r != nil {
			r.buf.CloseInput()
		}
	}
	drained := make(chan struct{})
	go func() {
		sinkWG.Wait()
		close(drained)
	}()
	if ctx.Err() == nil && runErr == nil {
		select {
		case <-drained:
		case <-ctx.Done():
		}
	}
	select {
	case <-drained:
	case <-time.After(p.opts.ShutdownTimeout):
		p.log.Warn("shutdown timeout: sinks stopped before delivering everything; the rest stays spooled (disk buffers) or comes again from the source (memory buffers)", "timeout", p.opts.ShutdownTimeout)
		cancelSinks()
		<-drained
	}
	return runErr
}

func (p *Pipeline) provision(ctx context.Context) error {
	if !p.opts.DryRun {
		if err := os.MkdirAll(p.dataDir, 0o750); err != nil {
			return fmt.Errorf("data_dir: %w", err)
		}
		st, err := OpenStateDB(filepath.Join(p.dataDir, "state.db"))
		if err != nil {
			return err
		}
		p.state = st
	}
	for _, n := range p.g.Nodes {
		rt := p.rt[n]
		nc := NodeContext{Name: n.Name, Kind: n.Kind, Logger: rt.log, DryRun: p.opts.DryRun}
		if p.opts.DryRun {
			nc.State = NewMemKV()
		} else {
			nc.StateDir = filepath.Join(p.dataDir, "nodes", n.Name)
			nc.State = p.state.Node(n.Name)
		}
		if pr, ok := n.Impl.(Provisioner); ok {
			if err := pr.Provision(ctx, nc); err != nil {
				return fmt.Errorf("%s %s: %w", n.Kind, n.Name, err)
			}
		}
	}
	if p.opts.DryRun {
		return nil
	}
	for _, n := range p.g.Sinks() {
		if pr, ok := n.Impl.(Preparer); ok {
			if err := pr.Prepare(ctx); err != nil {
				return fmt.Errorf("sink %s: %w", n.Name, err)
			}
		}
		rt := p.rt[n]
		var buf buffer
		if n.Buffer.Type == "memory" {
			buf = newMemBuffer(n.Buffer, &rt.stats, rt.log)
		} else {
			db, err := openDiskBuffer(filepath.Join(p.dataDir, "spool", n.Name), n.Buffer, &rt.stats, rt.log)
			if err != nil {
				return fmt.Errorf("sink %s: %w", n.Name, err)
			}
			buf = db
		}
		rt.runner.Store(&sinkRunner{p: p, rt: rt, sink: n.Impl.(Sink), buf: buf})
	}
	return nil
}

func (p *Pipeline) closeAll() error {
	var errs []error
	ctx, cancel := context.WithTimeout(context.Background(), p.opts.ShutdownTimeout)
	defer cancel()
	// Sinks first: closing a disk buffer syncs it, which acknowledges
	// records to the sources, which then write their checkpoints.
	for i := len(p.g.Nodes) - 1; i >= 0; i-- {
		n := p.g.Nodes[i]
		rt := p.rt[n]
		switch impl := n.Impl.(type) {
		case Sink:
			if err := impl.Close(ctx); err != nil {
				errs = append(errs, fmt.Errorf("close sink %s: %w", n.Name, err))
			}
			if r := rt.runner.Load(); r != nil {
				if err := r.buf.Close(); err != nil {
					errs = append(errs, fmt.Errorf("close buffer of sink %s: %w", n.Name, err))
				}
			}
		case io.Closer:
			if err := impl.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close %s %s: %w", n.Kind, n.Name, err))
			}
		}
	}
	if p.state != nil {
		if err := p.state.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// emitter takes a source's batches and runs them through the DAG in a
// goroutine of its own: the source decodes the next batch while the
// previous one is transformed and spooled (two cores at work), and order
// is kept.
type emitter struct {
	p     *Pipeline
	node  *Node
	ch    chan []*Record
	done  chan struct{}
	mu    sync.Mutex
	err   error // why forwarding stopped
	close sync.Once
}

// emitQueue is how many batches may wait between a source and the DAG.
const emitQueue = 4

func newEmitter(ctx context.Context, p *Pipeline, n *Node) *emitter {
	e := &emitter{p: p, node: n, ch: make(chan []*Record, emitQueue), done: make(chan struct{})}
	go func() {
		defer close(e.done)
		for recs := range e.ch {
			if e.failed() != nil {
				continue // drain; these are never acknowledged, so they come again
			}
			if err := p.forward(ctx, n, "", recs); err != nil {
				e.mu.Lock()
				e.err = err
				e.mu.Unlock()
			}
		}
	}()
	return e
}

func (e *emitter) failed() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

func (e *emitter) Emit(ctx context.Context, recs []*Record, ack func()) error {
	if err := e.failed(); err != nil {
		return err
	}
	NewAckedBatch(recs, ack)
	e.p.rt[e.node].stats.Out.Add(int64(len(recs)))
	select {
	case e.ch <- recs:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// finish waits until every emitted batch went through the DAG.
func (e *emitter) finish() error {
	e.close.Do(func() { close(e.ch) })
	<-e.done
	return e.failed()
}

// forward hands recs, leaving from's output, to every consumer of it.
func (p *Pipeline) forward(ctx context.Context, from *Node, output string, recs []*Record) error {
	if len(recs) == 0 {
		return nil
	}
	consumers := from.Consumers[output]
	switch len(consumers) {
	case 0: // an unwired router output: the records end here
		for _, r := range recs {
			r.Ack()
		}
		return nil
	case 1:
	default:
		for _, r := range recs {
			r.retain(len(consumers) - 1)
		}
	}
	for _, c := range consumers {
		if err := p.accept(ctx, c, recs); err != nil {
			return err
		}
	}
	return nil
}

func (p *Pipeline) accept(ctx context.Context, n *Node, recs []*Record) error {
	rt := p.rt[n]
	rt.stats.In.Add(int64(len(recs)))
	switch impl := n.Impl.(type) {
	case Router:
		byOut := map[string][]*Record{}
		for _, r := range recs {
			outs, err := impl.Route(ctx, r)
			if err != nil {
				p.recordError(rt, r, err)
				r.Ack()
				continue
			}
			if len(outs) == 0 {
				rt.stats.Dropped.Add(1)
				r.Ack()
				continue
			}
			r.retain(len(outs) - 1)
			for _, o := range outs {
				byOut[o] = append(byOut[o], r)
			}
		}
		for _, o := range sortedKeys(byOut) {
			rt.stats.Out.Add(int64(len(byOut[o])))
			if err := p.forward(ctx, n, o, byOut[o]); err != nil {
				return err
			}
		}
		return nil
	case Transform:
		out := make([]*Record, 0, len(recs))
		for _, r := range recs {
			res, err := impl.Process(ctx, r)
			if err != nil {
				p.recordError(rt, r, err)
				r.Ack()
				continue
			}
			if len(res) == 0 {
				rt.stats.Dropped.Add(1)
				r.Ack()
				continue
			}
			for _, o := range res {
				o.ack = r.ack
			}
			r.retain(len(res) - 1)
			out = append(out, res...)
		}
		rt.stats.Out.Add(int64(len(out)))
		return p.forward(ctx, n, "", out)
	case Sink:
		if p.opts.DryRun {
			return p.dryRun(ctx, n, impl, recs)
		}
		return rt.runner.Load().buf.Push(ctx, recs)
	}
	return fmt.Errorf("node %s: %T is no component", n.Name, n.Impl)
}

// recordError logs a per-record failure of a transform, at most once every
// 10 seconds per node with a count of the ones not shown.
func (p *Pipeline) recordError(rt *nodeRuntime, r *Record, err error) {
	rt.stats.Errors.Add(1)
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if time.Since(rt.lastWarn) < 10*time.Second {
		rt.muted++
		return
	}
	rt.log.Error("record dropped: transform failed", "record", r.ID, "error", err, "similar_errors_not_shown", rt.muted)
	rt.lastWarn, rt.muted = time.Now(), 0
}

// dryRun prints what sink n would send, labelled by sink. Sinks print in
// DAG order, one batch at a time, so the output is deterministic.
func (p *Pipeline) dryRun(ctx context.Context, n *Node, s Sink, recs []*Record) error {
	p.dryMu.Lock()
	defer p.dryMu.Unlock()
	w := &labelWriter{w: p.opts.DryRunOut, label: "[" + n.Name + "] "}
	var err error
	if dr, ok := s.(DryRunner); ok {
		err = dr.DryRun(ctx, recs, w)
	} else {
		for _, r := range recs {
			js, jerr := r.JSON()
			if jerr != nil {
				err = jerr
				break
			}
			w.Write(append(js, '\n'))
		}
	}
	w.flush()
	rt := p.rt[n]
	if err != nil {
		rt.stats.Errors.Add(int64(len(recs)))
		fmt.Fprintf(p.opts.DryRunOut, "[%s] error: %v\n", n.Name, err)
	} else {
		rt.stats.Out.Add(int64(len(recs)))
	}
	for _, r := range recs {
		r.Ack()
	}
	return nil
}

// labelWriter prefixes every line with a label.
type labelWriter struct {
	w     io.Writer
	label string
	buf   bytes.Buffer
}

func (l *labelWriter) Write(b []byte) (int, error) {
	l.buf.Write(b)
	for {
		line, err := l.buf.ReadBytes('\n')
		if err != nil {
			// Incomplete line: keep it for the next write.
			rest := append([]byte(nil), line...)
			l.buf.Reset()
			l.buf.Write(rest)
			return len(b), nil
		}
		if _, err := io.WriteString(l.w, l.label); err != nil {
			return 0, err
		}
		if _, err := l.w.Write(line); err != nil {
			return 0, err
		}
	}
}

func (l *labelWriter) flush() {
	if l.buf.Len() > 0 {
		io.WriteString(l.w, l.label)
		l.w.Write(l.buf.Bytes())
		io.WriteString(l.w, "\n")
		l.buf.Reset()
	}
}

// sinkRunner feeds one sink from its buffer, retrying failures with
// backoff until they succeed (at-least-once), and moving records the
// destination refuses for good to the dead-letter file.
type sinkRunner struct {
	p    *Pipeline
	rt   *nodeRuntime
	sink Sink
	buf  buffer
	dlq  *os.File
}

func (s *sinkRunner) run(ctx context.Context) {
	defer func() {
		if s.dlq != nil {
			s.dlq.Close()
		}
	}()
	max := s.rt.node.Batch.MaxRecords
	for {
		batch, t, err := s.buf.Next(ctx, max)
		if err != nil {
			if err != io.EOF && ctx.Err() == nil {
				s.rt.log.Error("reading the buffer failed", "error", err)
				s.rt.stats.Errors.Add(1)
				sleepCtx(ctx, time.Second)
				continue
			}
			return
		}
		if !s.deliver(ctx, batch) {
			return // shutdown timeout: the batch stays undelivered
		}
		s.buf.Done(t)
	}
}

func (s *sinkRunner) deliver(ctx context.Context, batch []*Record) bool {
	n := s.rt.node
	backoff := n.Retry.InitialBackoff
	var failingSince time.Time
	var lastLog time.Time
	for attempt := 1; ; attempt++ {
		err := s.sink.Write(ctx, batch)
		if err == nil {
			s.rt.stats.Out.Add(int64(len(batch)))
			if !failingSince.IsZero() {
				s.rt.log.Info("sink recovered", "after", time.Since(failingSince).Round(time.Millisecond), "attempts", attempt)
			}
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		var retry []*Record
		var be *BatchError
		switch {
		case errors.As(err, &be):
			for i, r := range batch {
				e, failed := be.Failed[i]
				switch {
				case !failed:
					s.rt.stats.Out.Add(1)
				case IsPermanent(e):
					s.deadLetter(r, e)
				default:
					retry = append(retry, r)
				}
			}
		case IsPermanent(err):
			for _, r := range batch {
				s.deadLetter(r, err)
			}
		default:
			retry = batch
		}
		if len(retry) == 0 {
			return true
		}
		batch = retry
		s.rt.stats.Retries.Add(1)
		if failingSince.IsZero() {
			failingSince = time.Now()
		}
		if time.Since(lastLog) > 30*time.Second {
			lastLog = time.Now()
			s.rt.log.Warn("write failed; retrying (records stay buffered, nothing is dropped)",
				"error", err, "attempt", attempt, "records", len(batch), "failing_for", time.Since(failingSince).Round(time.Second))
		}
		jitter := time.Duration(rand.Int64N(int64(backoff)/5 + 1))
		if !sleepCtx(ctx, backoff+jitter) {
			return false
		}
		backoff = min(2*backoff, n.Retry.MaxBackoff)
	}
}

// deadLetter appends a refused record, with the reason, to
// DATA_DIR/deadletter/SINK.jsonl: never dropped silently.
func (s *sinkRunner) deadLetter(r *Record, reason error) {
	s.rt.stats.DeadLettered.Add(1)
	path := filepath.Join(s.p.dataDir, "deadletter", s.rt.node.Name+".jsonl")
	s.rt.log.Error("destination refused a record for good; written to the dead-letter file", "record", r.ID, "error", reason, "file", path)
	if s.dlq == nil {
		if err := os.MkdirAll(filepath.Dir(path), 0o750); err == nil {
			s.dlq, _ = os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o640)
		}
		if s.dlq == nil {
			s.rt.log.Error("cannot open the dead-letter file; record lost", "record", r.ID, "file", path)
			return
		}
	}
	js, _ := r.JSON()
	line, _ := json.Marshal(struct {
		Time   string          `json:"time"`
		Sink   string          `json:"sink"`
		Error  string          `json:"error"`
		Record json.RawMessage `json:"record"`
	}{time.Now().UTC().Format(time.RFC3339Nano), s.rt.node.Name, reason.Error(), js})
	w := bufio.NewWriter(s.dlq)
	w.Write(append(line, '\n'))
	w.Flush()
	s.dlq.Sync()
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
