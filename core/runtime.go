package core

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fluxstream/fluxstream/internal/durable"
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
	// FS holds the spools (nil: the real file system); durability tests
	// pass a faultfs.
	FS durable.FS
}

// DefaultShutdownTimeout bounds how long sinks may drain on shutdown.
const DefaultShutdownTimeout = 30 * time.Second

// DefaultDataDir is the root under which configs without a data_dir keep
// their state: $STATE_DIRECTORY (systemd's StateDirectory=), else the
// user's state dir.
func DefaultDataDir() string {
	if d := os.Getenv("STATE_DIRECTORY"); d != "" {
		// systemd may list several, colon-separated: the first is ours.
		d, _, _ = strings.Cut(d, ":")
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

// EffectiveDataDir is where a run of g keeps its state: override (the
// --data-dir flag), else the config's data_dir, else DataDirFor the file.
func EffectiveDataDir(g *Graph, override string) string {
	switch {
	case override != "":
		return override
	case g.Config.DataDir != "":
		return g.Config.DataDir
	}
	return DataDirFor(g.Config.File)
}

// DataDirFor is the data_dir of a config file that names none: a
// directory of its own under DefaultDataDir, named after the file and
// its absolute path, so two configs never share a checkpoint by accident
// (the second would see every event as delivered and send nothing).
func DataDirFor(configFile string) string {
	abs, err := filepath.Abs(configFile)
	if err != nil {
		abs = configFile
	}
	name := strings.TrimSuffix(filepath.Base(abs), filepath.Ext(abs))
	name = strings.Map(func(r rune) rune {
		if r == '-' || r == '_' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' {
			return r
		}
		return '_'
	}, name)
	sum := sha256.Sum256([]byte(abs))
	return filepath.Join(DefaultDataDir(), fmt.Sprintf("%s-%x", name, sum[:4]))
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
	// fatal stops the sources when a part fails for good (a spool whose
	// fsync failed); set by Run.
	fatal func(error)
	phase atomic.Int32 // index into phases, for Health
	obs   atomic.Pointer[SinkObserver]
}

func (p *Pipeline) fail(err error) {
	if p.fatal != nil {
		p.fatal(err)
	}
}

type nodeRuntime struct {
	node   *Node
	log    *slog.Logger
	stats  SinkStats
	dlq    *deadLetters
	runner atomic.Pointer[sinkRunner] // sinks only, nil in dry-run
	srcRun atomic.Int32               // sources: index into sourceRuns
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
	dataDir := EffectiveDataDir(g, opts.DataDir)
	p := &Pipeline{g: g, opts: opts, log: opts.Logger, dataDir: dataDir, rt: map[*Node]*nodeRuntime{}}
	for _, n := range g.Nodes {
		p.rt[n] = &nodeRuntime{node: n, log: opts.Logger.With(n.Kind, n.Name), dlq: newDeadLetters(dataDir, n.Name)}
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
			Retries: rt.stats.Retries.Load(), DeadLettered: rt.stats.DeadLettered.Load(), BufferDropped: rt.stats.BufferDropped.Load(),
			ReadBack: rt.stats.ReadBack.Load()}
		if r := rt.runner.Load(); r != nil {
			r.snapshot(&s)
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
		p.phase.Store(phaseStopped)
	}()
	srcCtx, cancelSources := context.WithCancelCause(ctx)
	defer cancelSources(nil)
	p.fatal = cancelSources
	if err := p.provision(ctx); err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			// Stopped while starting (SIGTERM while a sink still reads
			// its state): nothing ran, so nothing is lost; a clean stop.
			p.log.Info("stopped while starting", "during", err.Error())
			return nil
		}
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

	type result struct {
		n   *Node
		err error
	}
	results := make(chan result, len(p.g.Sources()))
	p.phase.Store(phaseRunning)
	for _, n := range p.g.Sources() {
		em := newEmitter(srcCtx, p, n)
		p.rt[n].srcRun.Store(srcRunning)
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
			p.rt[res.n].srcRun.Store(srcFinished)
			p.rt[res.n].log.Info("source finished")
		case errors.Is(res.err, context.Canceled) && srcCtx.Err() != nil:
			p.rt[res.n].srcRun.Store(srcStopped)
		default:
			p.rt[res.n].srcRun.Store(srcFailed)
			p.rt[res.n].log.Error("source failed; shutting down", "error", res.err)
			if runErr == nil {
				runErr = fmt.Errorf("source %s: %w", res.n.Name, res.err)
			}
			cancelSources(nil)
		}
	}
	if cause := context.Cause(srcCtx); runErr == nil && cause != nil && !errors.Is(cause, context.Canceled) && ctx.Err() == nil {
		runErr = cause // a sink's spool failed for good
	}

	p.phase.Store(phaseStopping)
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
		cancelSinks()
		<-drained
		var waiting int64
		for _, n := range p.g.Sinks() {
			if r := p.rt[n].runner.Load(); r != nil {
				recs, _ := r.buf.Pending()
				waiting += recs
			}
		}
		p.log.Warn("shutdown timeout: sinks stopped before delivering everything; the rest stays spooled (disk buffers) or comes again from the source (memory buffers)",
			"timeout", p.opts.ShutdownTimeout, "undelivered", waiting)
		if runErr == nil && waiting > 0 {
			runErr = &UndeliveredError{Records: waiting, Timeout: p.opts.ShutdownTimeout}
		}
	}
	return runErr
}

// UndeliveredError is what Run returns when the shutdown timeout stopped
// the sinks with records still waiting: nothing is lost (they stay spooled
// or come again from the source), but the run did not finish its work.
type UndeliveredError struct {
	Records int64
	Timeout time.Duration
}

func (e *UndeliveredError) Error() string {
	return fmt.Sprintf("shutdown timeout (%s): %d records wait undelivered; they stay in the spools (memory buffers: the source sends them again) and go out at the next start", e.Timeout, e.Records)
}

// warnLegacyState tells a user upgrading from a build that kept every
// config's state in one shared default directory why this run starts
// without the old checkpoint, and how to keep it.
func (p *Pipeline) warnLegacyState() {
	if p.g.Config.DataDir != "" || p.opts.DataDir != "" {
		return
	}
	if _, err := os.Stat(filepath.Join(p.dataDir, "state.db")); !errors.Is(err, os.ErrNotExist) {
		return
	}
	old := DefaultDataDir()
	if _, err := os.Stat(filepath.Join(old, "state.db")); err == nil {
		p.log.Warn("a checkpoint from an earlier version is in the shared default data_dir; this config now keeps its own state and starts without it "+
			"(set data_dir to the old directory to go on from that checkpoint)", "old_data_dir", old, "data_dir", p.dataDir)
	}
}

func (p *Pipeline) provision(ctx context.Context) error {
	if !p.opts.DryRun {
		p.warnLegacyState()
		if err := os.MkdirAll(p.dataDir, 0o700); err != nil {
			return fmt.Errorf("data_dir: %w", err)
		}
		st, err := OpenStateDB(filepath.Join(p.dataDir, "state.db"))
		if err != nil {
			return err
		}
		p.state = st
	}
	keepers := keeperOf(p.g)
	for _, n := range p.g.Nodes {
		rt := p.rt[n]
		nc := NodeContext{Name: n.Name, Kind: n.Kind, Logger: rt.log, DryRun: p.opts.DryRun}
		if p.opts.DryRun {
			nc.State = NewMemKV()
		} else {
			nc.StateDir = filepath.Join(p.dataDir, "nodes", n.Name)
			kv, err := p.sourceState(ctx, n, keepers)
			if err != nil {
				return err
			}
			nc.State = kv
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
			db, err := openDiskBuffer(p.opts.FS, filepath.Join(p.dataDir, "spool", n.Name), n.Buffer, &rt.stats, rt.log, rt.dlq,
				func(err error) { p.fail(fmt.Errorf("sink %s: %w", n.Name, err)) })
			if err != nil {
				return fmt.Errorf("sink %s: %w", n.Name, err)
			}
			buf = db
		}
		r := &sinkRunner{p: p, rt: rt, sink: n.Impl.(Sink), buf: buf}
		r.notePushed(0) // what an earlier run left spooled
		rt.runner.Store(r)
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
	if kr, ok := n.Impl.(KeepsReading); ok && kr.KeepsReading() {
		ctx = context.WithValue(ctx, keepsReadingKey{}, true)
	}
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
				if err := p.nodeFailed(rt, r, err); err != nil {
					return err
				}
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
				if err := p.nodeFailed(rt, r, err); err != nil {
					return err
				}
				continue
			}
			if len(res) == 0 {
				rt.stats.Dropped.Add(1)
				r.Ack()
				continue
			}
			for _, o := range res {
				o.ack = r.ack
				if o != r {
					o.forgetJSON()
				}
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
		r := rt.runner.Load()
		if err := r.buf.Push(ctx, recs); err != nil {
			return err
		}
		r.notePushed(len(recs))
		return nil
	}
	return fmt.Errorf("node %s: %T is no component", n.Name, n.Impl)
}

// nodeFailed parks a record a transform or router failed on in the node's
// dead-letter file, with the reason: a failure is not a delivery. Only
// once the line is durable is the record acknowledged. If the file cannot
// be written, the error stops the source: the record is never
// acknowledged, so it comes again after a restart. In dry-run nothing is
// written; the failure is printed.
func (p *Pipeline) nodeFailed(rt *nodeRuntime, r *Record, err error) error {
	rt.stats.Errors.Add(1)
	if p.opts.DryRun {
		p.dryMu.Lock()
		fmt.Fprintf(p.opts.DryRunOut, "[%s] error: record %s: %v (a real run writes it to the dead-letter file)\n", rt.node.Name, r.ID, err)
		p.dryMu.Unlock()
		r.Ack()
		return nil
	}
	if derr := rt.dlq.add(recordLetter(r, err)); derr != nil {
		rt.log.Error("record failed and cannot be dead-lettered; stopping (it is not acknowledged and comes again)", "record", r.ID, "error", err, "dead_letter_error", derr)
		return fmt.Errorf("%s %s: record %s failed (%v) and %w", rt.node.Kind, rt.node.Name, r.ID, err, derr)
	}
	rt.stats.DeadLettered.Add(1)
	rt.warnf("record failed; written to the dead-letter file", "record", r.ID, "error", err, "file", rt.dlq.path)
	r.Ack()
	return nil
}

// warnf logs a per-record problem of a node at most once every 10 seconds,
// with the count of the ones not shown.
func (rt *nodeRuntime) warnf(msg string, args ...any) {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if time.Since(rt.lastWarn) < 10*time.Second {
		rt.muted++
		return
	}
	rt.log.Error(msg, append(args, "similar_not_shown", rt.muted)...)
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
	// for the oldest-undelivered age (stats.go)
	ages               ageMarks
	memPushed, memDone atomic.Uint64
	pipelined          bool // InFlight counts every batch on its way (runPipelined)
}

func (s *sinkRunner) run(ctx context.Context) {
	max := batchRecords(s.rt.node.Batch, s.sink)
	if pl, ok := s.sink.(Pipeliner); ok && pl.PipelineDepth() > 1 {
		s.runPipelined(ctx, pl, max)
		return
	}
	for {
		batch, t, ok := s.next(ctx, max)
		if !ok {
			return
		}
		if len(batch) > 0 && !s.deliver(ctx, batch, nil) {
			return // shutdown timeout: the batch stays undelivered
		}
		s.buf.Done(t)
		s.noteDone(t)
	}
}

// next takes the next batch from the buffer (empty when every entry read
// was dead-lettered); false at the end of the input or of ctx.
func (s *sinkRunner) next(ctx context.Context, max int) ([]*Record, ticket, bool) {
	for {
		batch, t, err := s.buf.Next(ctx, max)
		if err == nil {
			return batch, t, true
		}
		if err == io.EOF || ctx.Err() != nil {
			return nil, ticket{}, false
		}
		s.rt.warnf("reading the buffer failed; retrying", "error", err)
		s.rt.stats.Errors.Add(1)
		sleepCtx(ctx, time.Second)
	}
}

// sent is a batch on its way to a Pipeliner.
type sent struct {
	batch []*Record
	t     ticket
	at    time.Time
	wait  func(context.Context) error // nil: delivered with Write
	done  chan struct{}               // Write only: closed once delivered
}

// runPipelined feeds a Pipeliner: this goroutine takes batches and sends
// them, up to the sink's depth ahead; another waits for them in order,
// retries failures as run does and releases them from the buffer. A
// retry holds back further sends, so records retried are not overtaken
// by many more; and a batch the sink cannot take without blocking goes
// with Write once everything sent before it is done.
func (s *sinkRunner) runPipelined(ctx context.Context, pl Pipeliner, max int) {
	s.pipelined = true
	depth := pl.PipelineDepth()
	slots := make(chan struct{}, depth)
	queue := make(chan *sent, depth)
	var sendMu sync.Mutex // a Send or a Write, never both
	completed := make(chan struct{})
	go func() {
		defer close(completed)
		for it := range queue {
			if !s.finish(ctx, it, &sendMu) {
				return // shutdown timeout: this batch and the rest stay undelivered
			}
			s.buf.Done(it.t)
			s.noteDone(it.t)
			<-slots
		}
	}()
	defer func() {
		close(queue)
		<-completed
	}()
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return
		}
		batch, t, ok := s.next(ctx, max)
		if !ok {
			return
		}
		it := &sent{batch: batch, t: t, at: time.Now()}
		if len(batch) > 0 {
			sendMu.Lock()
			it.wait, ok = pl.Send(ctx, batch)
			sendMu.Unlock()
			if ok {
				s.rt.stats.InFlight.Add(int64(len(batch)))
			} else {
				it.wait, it.done = nil, make(chan struct{})
			}
		}
		queue <- it // never blocks: a slot is held
		if it.done != nil {
			select {
			case <-it.done:
			case <-completed:
				return
			}
		}
	}
}

// finish completes one batch of runPipelined; false at the shutdown
// timeout.
func (s *sinkRunner) finish(ctx context.Context, it *sent, sendMu *sync.Mutex) bool {
	n := len(it.batch)
	switch {
	case n == 0:
		return true
	case it.wait == nil:
		defer close(it.done)
		return s.deliver(ctx, it.batch, nil)
	}
	defer s.rt.stats.InFlight.Add(-int64(n))
	s.rt.stats.writingSince.Store(it.at.UnixNano())
	err := it.wait(ctx)
	s.wrote(n, it.at, err)
	if err == nil {
		s.rt.stats.Out.Add(int64(n))
		return true
	}
	if ctx.Err() != nil {
		return false
	}
	sendMu.Lock()
	defer sendMu.Unlock()
	return s.deliver(ctx, it.batch, err)
}

// batchRecords is the most records one Write gets: the config's, else the
// sink's own default, else DefaultBatchRecords.
func batchRecords(cfg BatchConfig, sink Sink) int {
	if cfg.MaxRecords > 0 {
		return cfg.MaxRecords
	}
	if bs, ok := sink.(BatchSizer); ok {
		if n := bs.DefaultBatchRecords(); n > 0 {
			return n
		}
	}
	return DefaultBatchRecords
}

// deliver writes the batch, retrying with backoff until every record is
// delivered or dead-lettered; false at the shutdown timeout. failed, when
// not nil, is how an attempt already made (a pipelined Send) ended.
func (s *sinkRunner) deliver(ctx context.Context, batch []*Record, failed error) bool {
	n := s.rt.node
	backoff := n.Retry.InitialBackoff
	var failingSince time.Time
	var lastLog time.Time
	defer s.delivered()
	for attempt := 1; ; attempt++ {
		err := failed
		if attempt > 1 || failed == nil {
			start := s.writing(len(batch))
			err = s.sink.Write(ctx, batch)
			s.wrote(len(batch), start, err)
		}
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
					if !s.deadLetter(r, e) {
						retry = append(retry, r)
					}
				default:
					retry = append(retry, r)
				}
			}
		case IsPermanent(err):
			for _, r := range batch {
				if !s.deadLetter(r, err) {
					retry = append(retry, r)
				}
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
			s.failing(failingSince)
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

// deadLetter parks a record the destination refused for good in
// DATA_DIR/deadletter/SINK.jsonl, with the reason. It reports false when
// the file cannot be written: the caller keeps the record and retries, so
// the sink stalls (loudly) rather than losing it.
func (s *sinkRunner) deadLetter(r *Record, reason error) bool {
	if err := s.rt.dlq.add(recordLetter(r, reason)); err != nil {
		s.rt.warnf("destination refused a record for good and the dead-letter file cannot be written: the sink holds it and retries", "record", r.ID, "reason", reason, "error", err)
		return false
	}
	s.rt.stats.DeadLettered.Add(1)
	s.rt.warnf("destination refused a record for good; written to the dead-letter file", "record", r.ID, "error", reason, "file", s.rt.dlq.path)
	return true
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
