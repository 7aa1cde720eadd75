// Package flux is the `flux` source: it streams every job event of a Flux
// instance through job-manager.events-journal, with the job's snapshot at
// each event, plus a purge record per job-purge-inactive. It reconnects
// with backoff, re-reads the full backlog (Flux has no resume cursor) and
// emits only what was not emitted before.
package flux

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"syscall"
	"time"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/sources/flux/connector"
	"github.com/fluxstream/fluxstream/sources/flux/journal"
	"github.com/fluxstream/fluxstream/sources/flux/users"
	"github.com/fluxstream/fluxstream/sources/flux/wire"
)

// Sample is the sample config.
//
//go:embed sample.yaml
var Sample string

// Register adds the flux source to r.
func Register(r *core.Registry) {
	r.RegisterSource("flux", "job events of a Flux instance (job-manager.events-journal), with job snapshots", New)
}

const (
	journalTopic = "job-manager.events-journal"
	jobListTopic = "job-list.list"
	cancelTopic  = "job-manager.events-journal-cancel"
	purgeTopic   = "job-purge-inactive"
)

// Config is the source's config.
type Config struct {
	// URI of the broker: local:///path/to/local or ssh://[user@]host/path.
	// Default: $FLUX_URI, else local:///run/flux/local.
	URI     string `yaml:"uri"`
	Cluster string `yaml:"cluster"`
	// Full asks for the whole backlog (every job Flux holds) at each
	// connect. Needed to recover after restarts; false streams only active
	// jobs and new events.
	Full bool `yaml:"full"`
	// Allow and Deny filter events by name (Flux applies them).
	Allow []string `yaml:"allow"`
	Deny  []string `yaml:"deny"`
	// PurgeEvents subscribes to job-purge-inactive (a purge record per job).
	PurgeEvents bool            `yaml:"purge_events"`
	Include     journal.Include `yaml:"include"`
	UserLookup  string          `yaml:"user_lookup"` // getent | files | none
	Reconnect   struct {
		InitialBackoff time.Duration `yaml:"initial_backoff"`
		MaxBackoff     time.Duration `yaml:"max_backoff"`
	} `yaml:"reconnect"`
	// MaxMessage bounds one message from the broker.
	MaxMessage core.ByteSize `yaml:"max_message"`
}

// Validate checks the decoded config.
func (c *Config) Validate() error {
	var errs []error
	if c.Reconnect.InitialBackoff <= 0 || c.Reconnect.MaxBackoff < c.Reconnect.InitialBackoff {
		errs = append(errs, core.Fieldf("reconnect", "want 0 < initial_backoff <= max_backoff"))
	}
	if err := users.CheckMode(c.UserLookup); err != nil {
		errs = append(errs, core.Fieldf("user_lookup", "%v", err))
	}
	if err := c.Include.Validate(); err != nil {
		errs = append(errs, err)
	}
	if c.MaxMessage < 1<<20 {
		errs = append(errs, core.Fieldf("max_message", "must be at least 1MiB"))
	}
	return errors.Join(errs...)
}

// Source streams one Flux instance.
type Source struct {
	cfg       Config
	log       *slog.Logger
	cons      *journal.Consumer
	ann       annotator // nil: annotations are not asked of job-list
	stopAfter bool      // dry-run: stop at the end of the backlog
	mu        sync.Mutex
	status    Status
}

// Status is what the source reports about its connection (for metrics and
// health checks).
type Status struct {
	Connected  bool
	InBacklog  bool
	Reconnects int
	LastError  string
	RetryIn    time.Duration // the wait before the latest reconnect
}

var (
	_ core.Source           = (*Source)(nil)
	_ core.Provisioner      = (*Source)(nil)
	_ core.CheckpointStager = (*Source)(nil)
)

// New decodes the node's config.
func New(nc *core.NodeConfig) (core.Source, error) {
	s := &Source{cfg: Config{Full: true, PurgeEvents: true, Include: journal.DefaultInclude(),
		UserLookup: users.ModeGetent, MaxMessage: wire.DefaultMaxMessage}}
	s.cfg.Reconnect.InitialBackoff = time.Second
	s.cfg.Reconnect.MaxBackoff = 30 * time.Second
	if err := nc.Decode(&s.cfg); err != nil {
		return nil, err
	}
	if s.cfg.URI == "" {
		s.cfg.URI = connector.URIFromEnv()
	}
	if s.cfg.Cluster == "" {
		s.cfg.Cluster = nc.Global().Cluster
	}
	return s, nil
}

// URI is the broker the source connects to.
func (s *Source) URI() string { return s.cfg.URI }

// Provision sets up the journal consumer and its checkpoint.
func (s *Source) Provision(_ context.Context, nc core.NodeContext) error {
	s.log = nc.Logger
	s.stopAfter = nc.DryRun
	cons := journal.NewConsumer(journal.Options{
		Source: nc.Name, Cluster: s.cfg.Cluster, Include: s.cfg.Include,
		Users: users.New(s.cfg.UserLookup), Logger: nc.Logger,
	}, nc.State)
	// Under s.mu: the CLI's progress line asks for Stats while the
	// pipeline still provisions (an exactly-once sink reads Kafka first).
	s.mu.Lock()
	s.cons = cons
	s.mu.Unlock()
	s.ann = newAnnotator(cons)
	return nil
}

// StageCheckpoint marks recs delivered and commits the checkpoint: an
// exactly-once sink calls it inside the transaction that carries both.
func (s *Source) StageCheckpoint(recs []*core.Record) error { return s.cons.Stage(recs) }

// annotator takes the annotations job-list holds for a job (the
// "annotations" attribute of job-list.list; nil when it has none) and
// returns the records that carry them. The journal consumer does it: it
// sets them on the job's state if the job was read from this stream's
// backlog, is still active and got no live annotations event since, and
// returns a record when records of the job already went out without them.
type annotator interface {
	Annotate(id uint64, annotations json.RawMessage) []*core.Record
}

// newAnnotator returns the consumer's annotator, nil while the consumer
// has none (then job-list is not asked). Tests replace it.
var newAnnotator = func(c *journal.Consumer) annotator {
	a, _ := any(c).(annotator)
	return a
}

// Close writes the checkpoint a last time.
func (s *Source) Close() error {
	if s.cons == nil {
		return nil
	}
	return s.cons.Close()
}

// errFatal wraps errors that reconnecting cannot fix.
type errFatal struct{ error }

func (e errFatal) Unwrap() error { return e.error }

// Run streams until ctx ends. It returns an error only for problems a
// reconnect cannot fix (not the instance owner, a request Flux rejects).
//
// Between connections it waits with exponential backoff, from
// initial_backoff up to max_backoff. The backoff starts again from
// initial_backoff once a connection has delivered its whole backlog: that
// broker was healthy, so a second restart soon after is a new outage, not
// the same one. ssh failing to run `flux relay` at all (ssh exit 255: login
// refused, host key, unreachable; exit 127: no flux on the remote PATH) is
// retried after max_backoff straight away.
var _ journal.StatsReporter = (*Source)(nil)

// Stats reports what the journal consumer did (counts per backlog, per
// stream, in all).
func (s *Source) Stats() journal.Stats {
	s.mu.Lock()
	cons := s.cons
	s.mu.Unlock()
	if cons == nil {
		return journal.Stats{}
	}
	return cons.Stats()
}

func (s *Source) Run(ctx context.Context, out core.Emitter) error {
	backoff := s.cfg.Reconnect.InitialBackoff
	for {
		res, err := s.session(ctx, out)
		if ctx.Err() != nil {
			return nil
		}
		if res.done {
			return nil
		}
		var fatal errFatal
		if errors.As(err, &fatal) {
			return connector.DescribeError(s.cfg.URI, fatal.error)
		}
		if s.stopAfter && err != nil {
			// A dry-run looks once; it does not wait for Flux to come up.
			return connector.DescribeError(s.cfg.URI, err)
		}
		if res.backlogRead {
			backoff = s.cfg.Reconnect.InitialBackoff
		}
		msg := "flux connection lost; reconnecting (the backlog is read again, only new events are emitted)"
		if errors.Is(err, connector.ErrRemote) {
			backoff = s.cfg.Reconnect.MaxBackoff
			msg = "cannot reach flux over ssh; retrying after max_backoff"
		}
		s.setStatus(func(st *Status) {
			st.Connected = false
			st.Reconnects++
			st.LastError = err.Error()
			st.RetryIn = backoff
		})
		s.log.Warn(msg, "uri", s.cfg.URI, "error", connector.DescribeError(s.cfg.URI, err), "retry_in", backoff)
		select {
		case <-time.After(backoff):
		case <-ctx.Done():
			return nil
		}
		backoff = min(2*backoff, s.cfg.Reconnect.MaxBackoff)
	}
}

type journalRequest struct {
	Full  bool           `json:"full"`
	Allow map[string]int `json:"allow,omitempty"`
	Deny  map[string]int `json:"deny,omitempty"`
}

func nameSet(names []string) map[string]int {
	if len(names) == 0 {
		return nil
	}
	m := make(map[string]int, len(names))
	for _, n := range names {
		m[n] = 1
	}
	return m
}

const maxBatch = 512

// sessionResult is how a connection ended: done is a deliberate end
// (dry-run reached the end of the backlog); backlogRead says the
// connection delivered its whole backlog before it ended.
type sessionResult struct {
	done        bool
	backlogRead bool
}

// session runs one connection.
func (s *Source) session(ctx context.Context, out core.Emitter) (res sessionResult, err error) {
	conn, err := connector.Dial(ctx, s.cfg.URI, connector.Options{MaxMessage: int(s.cfg.MaxMessage)})
	if err != nil {
		if errors.Is(err, connector.ErrHandshake) && errors.Is(err, syscall.EPERM) {
			return res, errFatal{err}
		}
		return res, err
	}
	defer conn.Close()
	if s.cfg.PurgeEvents {
		subCtx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err := conn.Subscribe(subCtx, purgeTopic)
		cancel()
		if err != nil {
			return res, fmt.Errorf("subscribe to %s: %w", purgeTopic, err)
		}
	}
	req := journalRequest{Full: s.cfg.Full, Allow: nameSet(s.cfg.Allow), Deny: nameSet(s.cfg.Deny)}
	call, err := conn.Request(journalTopic, req, true)
	if err != nil {
		return res, err
	}
	s.cons.StartStream(s.cfg.Full)
	s.setStatus(func(st *Status) { st.Connected, st.InBacklog = true, true })
	s.log.Info("connected; reading the journal backlog", "uri", s.cfg.URI, "full", s.cfg.Full)
	backlogStart := time.Now()

	var batch []*core.Record
	emit := func() error {
		if len(batch) == 0 {
			return nil
		}
		recs := batch
		batch = nil
		return out.Emit(ctx, recs, func() { s.cons.Taken(recs) })
	}
	// handle takes one message; it reports whether the backlog just ended.
	handle := func(m wire.Message) (bool, error) {
		if m.Type == wire.Event {
			if m.Topic == purgeTopic {
				batch = append(batch, s.cons.Purge(m.JSON(), fmt.Sprintf("event %s seq %d", m.Topic, m.Seq()))...)
			}
			return false, nil
		}
		if err := connector.ResponseError(&m); err != nil {
			if errors.Is(err, syscall.ENODATA) {
				return false, fmt.Errorf("journal stream ended by the broker (job-manager unloaded or instance shutting down): %w", err)
			}
			if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EPROTO) || errors.Is(err, syscall.EINVAL) {
				return false, errFatal{err}
			}
			return false, err
		}
		wasBacklog := s.cons.InBacklog()
		batch = append(batch, s.cons.Response(m.JSON(), "")...)
		return wasBacklog && !s.cons.InBacklog(), nil
	}

	// The job-list answer (see askAnnotations), read along with the
	// journal: the connection delivers both in order, so waiting for one
	// while the other fills up would stall both.
	var list *annotationsCall
	var listC <-chan wire.Message
	takeList := func(m wire.Message, ok bool) {
		if !ok {
			listC = nil
			return
		}
		recs, end := list.take(m)
		batch = append(batch, recs...)
		if end {
			listC = nil
		}
	}

	for {
		var m wire.Message
		var ok bool
		ended := false
		err = nil
		select {
		case m, ok = <-call.C:
			if !ok {
				return res, fmt.Errorf("connection lost: %w", conn.Err())
			}
			ended, err = handle(m)
		case m = <-conn.Events():
			ended, err = handle(m)
		case m, ok = <-listC:
			takeList(m, ok)
		case <-ctx.Done():
			s.cancel(conn, call)
			return res, ctx.Err()
		}
		// Take whatever else is already waiting, up to a batch.
	drain:
		for err == nil && !ended && len(batch) < maxBatch {
			select {
			case m, ok = <-call.C:
				if !ok {
					err = fmt.Errorf("connection lost: %w", conn.Err())
					break drain
				}
				ended, err = handle(m)
			case m = <-conn.Events():
				ended, err = handle(m)
			case m, ok = <-listC:
				takeList(m, ok)
			default:
				break drain
			}
		}
		if eerr := emit(); eerr != nil {
			s.cancel(conn, call)
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
			// The pipeline cannot take records (a spool cannot write):
			// stop rather than read Flux into nowhere. What was not
			// taken comes again from the backlog after a restart.
			return res, errFatal{fmt.Errorf("pipeline refused records: %w", eerr)}
		}
		if err != nil {
			return res, err
		}
		if ended {
			res.backlogRead = true
			s.setStatus(func(st *Status) { st.InBacklog = false })
			s.log.Info("backlog read; following live events", "took", time.Since(backlogStart).Round(time.Millisecond), "active_jobs", s.cons.ActiveJobs())
			if s.stopAfter {
				s.cancel(conn, call)
				res.done = true
				return res, nil
			}
			if list = s.askAnnotations(conn); list != nil {
				listC = list.call.C
			}
		}
	}
}

// jobListRequest asks job-list for the annotations of every active job:
// job-list.list (flux-core 0.88 src/modules/job-list/list.c:list_cb),
// streaming, so each job comes in a response of its own
// ({"jobs":[{"id":ID,"annotations":{...}}],"version":1} first, then
// {"jobs":[...]}) and the stream ends with ENODATA; no message grows
// with the number of jobs. max_entries 0 is unlimited: the answer is
// bounded by Flux's own active jobs. job-list has no job id constraint in
// 0.88 (match.c: userid, name, queue, states, results, hostlist, ranks,
// t_*), so we ask by state ("active" = DEPEND|PRIORITY|SCHED|RUN|CLEANUP,
// libjob/state.c) and the consumer keeps the jobs it read in the backlog.
var jobListRequest = map[string]any{
	"max_entries": 0,
	"attrs":       []string{"annotations"},
	"constraint":  map[string]any{"states": []string{"active"}},
}

// annotationsCall is a job-list.list call in progress.
type annotationsCall struct {
	s       *Source
	call    *connector.Call
	jobs    int
	records int
}

// askAnnotations asks job-list, once per connection and after the
// backlog, for the annotations of active jobs: annotations events are
// live-only, so jobs read from a backlog lack them (the scheduler's
// resource_summary, t_estimate; volatile memos). Only when there are
// active jobs and the consumer can take them.
func (s *Source) askAnnotations(conn *connector.Conn) *annotationsCall {
	if s.ann == nil || s.cons.ActiveJobs() == 0 {
		return nil
	}
	call, err := conn.Request(jobListTopic, jobListRequest, true)
	if err != nil {
		s.log.Warn("cannot ask job-list for annotations; jobs read from the backlog lack them until their next annotations event", "error", err)
		return nil
	}
	return &annotationsCall{s: s, call: call}
}

// take handles one response of the job-list call; end reports its last.
func (a *annotationsCall) take(m wire.Message) (recs []*core.Record, end bool) {
	s := a.s
	if err := connector.ResponseError(&m); err != nil {
		if errors.Is(err, syscall.ENODATA) {
			s.log.Info("annotations of active jobs read from job-list", "jobs", a.jobs, "records", a.records)
			return nil, true
		}
		s.log.Warn("job-list did not give annotations; jobs read from the backlog lack them until their next annotations event",
			"error", err, "hint", "is the job-list module loaded? (flux module list)")
		return nil, true
	}
	jobs, err := parseJobList(m.JSON())
	if err != nil {
		s.log.Warn("job-list response does not decode; skipped", "error", err, "payload", m.String())
		return nil, false
	}
	for _, j := range jobs {
		a.jobs++
		r := s.ann.Annotate(j.id, j.annotations)
		a.records += len(r)
		recs = append(recs, r...)
	}
	// A non-streaming answer (a broker that ignores the flag) is whole.
	return recs, m.Flags&wire.FlagStreaming == 0
}

type listedJob struct {
	id          uint64
	annotations json.RawMessage // nil: job-list has none
}

// parseJobList decodes a job-list.list response: {"jobs":[{"id":I,
// "annotations":{...}}...]}. job-list leaves "annotations" out of a job
// that has none (job_util.c:store_attr).
func parseJobList(payload []byte) ([]listedJob, error) {
	var resp struct {
		Jobs *[]struct {
			ID          uint64          `json:"id"`
			Annotations json.RawMessage `json:"annotations"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal(payload, &resp); err != nil {
		return nil, fmt.Errorf("job-list.list: %w", err)
	}
	if resp.Jobs == nil {
		return nil, errors.New(`job-list.list: no "jobs" array`)
	}
	out := make([]listedJob, 0, len(*resp.Jobs))
	for _, j := range *resp.Jobs {
		ann := j.Annotations
		if string(ann) == "null" {
			ann = nil
		}
		out = append(out, listedJob{id: j.ID, annotations: ann})
	}
	return out, nil
}

// cancel ends the journal stream politely: events-journal-cancel, then a
// short wait for the broker's ENODATA, so the job-manager drops its state.
func (s *Source) cancel(conn *connector.Conn, call *connector.Call) {
	if err := conn.Notify(cancelTopic, map[string]uint32{"matchtag": call.Matchtag}); err != nil {
		return
	}
	timeout := time.After(time.Second)
	for {
		select {
		case m, ok := <-call.C:
			if !ok || m.Errnum() != 0 {
				return
			}
		case <-timeout:
			return
		}
	}
}

var _ core.StateReporter = (*Source)(nil)

// KeepsReading: the broker's socket is read at all times (a Flux broker
// buffers what a client does not read); a slow sink reads back from its
// spool instead of holding the source.
func (s *Source) KeepsReading() bool { return true }

var _ core.KeepsReading = (*Source)(nil)

// SourceState says whether the source is connected (readiness checks).
func (s *Source) SourceState() core.SourceState {
	st := s.Status()
	switch {
	case st.Connected && st.InBacklog:
		return core.SourceState{Connected: true, Detail: "reading the backlog"}
	case st.Connected:
		return core.SourceState{Connected: true}
	case st.LastError != "":
		return core.SourceState{Detail: fmt.Sprintf("disconnected from %s: %s; retrying", s.cfg.URI, st.LastError)}
	}
	return core.SourceState{Detail: "connecting to " + s.cfg.URI}
}

// Status reports the connection state.
func (s *Source) Status() Status {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status
}

func (s *Source) setStatus(fn func(*Status)) {
	s.mu.Lock()
	fn(&s.status)
	s.mu.Unlock()
}
