// Package kafka is the `kafka` source: it consumes the topics the kafka
// sink writes, in a consumer group (cooperative-sticky), and emits the
// records the flux source emitted (same id, key, job snapshot, raw data),
// decoded from their JSON form or from Avro (Confluent framing through a
// schema registry, with schema resolution; or single-object encoding).
//
// An offset is committed only once every sink the record reaches has it
// durably: per partition, the contiguous prefix of acknowledged offsets.
// When partitions are revoked, what is acknowledged is committed and the
// rest is left for the new owner (it comes again there: at-least-once).
// Messages that cannot be decoded become `invalid` records naming the
// topic, partition and offset, so no partition ever gets stuck.
package kafka

import (
	"cmp"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/internal/kafkaclient"
	"github.com/fluxstream/fluxstream/internal/logutil"
	"github.com/fluxstream/fluxstream/schemas"
	"github.com/fluxstream/fluxstream/schemas/avrorec"
)

// Sample is the sample config.
//
//go:embed sample.yaml
var Sample string

// Register adds the kafka source to r.
func Register(r *core.Registry) {
	r.RegisterSource("kafka", "fluxstream records from Kafka topics, in a consumer group (JSON or Avro)", New)
}

// LagMetric is the metric name reserved for the consumer lag (records
// between the committed offset and the end of each partition).
const LagMetric = "fluxstream_kafka_consumer_lag"

// Config is the source's config.
type Config struct {
	Brokers []string `yaml:"brokers"`
	// Topics to consume; with Regex, each is a regular expression.
	Topics []string `yaml:"topics"`
	Regex  bool     `yaml:"regex"`
	// Group is the consumer group: processes with the same group share
	// the partitions.
	Group string `yaml:"group"`
	// Format is "auto" (by the content-type header, else the first
	// byte), "json", "avro-confluent" or "avro-single-object".
	Format   string         `yaml:"format"`
	Registry RegistryConfig `yaml:"registry"`
	// Start is where a group without committed offsets begins:
	// "earliest" (default) or "latest".
	Start string `yaml:"start"`
	// Isolation is "read_committed" (default: records of aborted
	// transactions never show) or "read_uncommitted".
	Isolation        string        `yaml:"isolation"`
	ClientID         string        `yaml:"client_id"`
	InstanceID       string        `yaml:"instance_id"` // static membership (optional)
	SessionTimeout   time.Duration `yaml:"session_timeout"`
	RebalanceTimeout time.Duration `yaml:"rebalance_timeout"`
	HeartbeatEvery   time.Duration `yaml:"heartbeat_interval"`
	CommitInterval   time.Duration `yaml:"commit_interval"`
	MaxBatch         int           `yaml:"max_batch"`
	DialTimeout      time.Duration `yaml:"dial_timeout"`
	TLS              TLSConfig     `yaml:"tls"`
	SASL             SASLConfig    `yaml:"sasl"`
}

// RegistryConfig reaches the schema registry that holds the writer
// schemas of Confluent-framed values.
type RegistryConfig struct {
	URLs     []string      `yaml:"urls"`
	Username string        `yaml:"username"`
	Password string        `yaml:"password"`
	Timeout  time.Duration `yaml:"timeout"`
	TLS      TLSConfig     `yaml:"tls"`
}

// TLSConfig enables TLS (to the brokers, or to the registry).
type TLSConfig = kafkaclient.TLS

// SASLConfig authenticates to the brokers.
type SASLConfig = kafkaclient.SASL

// Validate checks the decoded config.
func (c *Config) Validate() error {
	errs := kafkaclient.CheckBrokers(c.Brokers, kafkaclient.AnyAddress)
	if len(c.Topics) == 0 {
		errs = append(errs, core.Fieldf("topics", "must list at least one topic"))
	}
	if c.Regex {
		for _, t := range c.Topics {
			if _, err := regexp.Compile(t); err != nil {
				errs = append(errs, core.Fieldf("topics", "%q: %v", t, err))
			}
		}
	}
	if c.Group == "" {
		errs = append(errs, core.Fieldf("group", "must be set (the consumer group the workers share)"))
	}
	switch c.Format {
	case "auto", "json", schemas.FormatConfluent, schemas.FormatSingleObject:
	default:
		errs = append(errs, core.Fieldf("format", "unknown format %q (auto, json, avro-confluent, avro-single-object)", c.Format))
	}
	if c.Format == schemas.FormatConfluent && len(c.Registry.URLs) == 0 {
		errs = append(errs, core.Fieldf("registry.urls", "avro-confluent needs the schema registry"))
	}
	switch c.Start {
	case "earliest", "latest":
	default:
		errs = append(errs, core.Fieldf("start", "unknown start %q (earliest, latest)", c.Start))
	}
	switch c.Isolation {
	case "read_committed", "read_uncommitted":
	default:
		errs = append(errs, core.Fieldf("isolation", "unknown isolation %q (read_committed, read_uncommitted)", c.Isolation))
	}
	if err := c.SASL.CheckMechanism(); err != nil {
		errs = append(errs, err)
	}
	if c.MaxBatch <= 0 || c.CommitInterval <= 0 || c.SessionTimeout <= 0 || c.RebalanceTimeout <= 0 ||
		c.HeartbeatEvery <= 0 || c.DialTimeout <= 0 || c.Registry.Timeout <= 0 {
		errs = append(errs, core.Fieldf("", "max_batch, commit_interval, session_timeout, rebalance_timeout, heartbeat_interval, dial_timeout and registry.timeout must be positive"))
	}
	return errors.Join(errs...)
}

// Source consumes fluxstream records from Kafka.
type Source struct {
	cfg    Config
	name   string
	log    *slog.Logger
	limit  *logutil.Limiter
	redact *logutil.Redactor
	dryRun bool
	client *kgo.Client
	reg    *sr.Client
	reach  reach // brokers answering, for /readyz

	schemaMu sync.Mutex
	schemas  map[int]avro.Schema // writer schemas by registry id

	mu        sync.Mutex
	parts     map[tp]*partition // owned partitions
	commitReq chan struct{}
	closed    bool
}

type tp struct {
	topic string
	part  int32
}

// partition tracks the records of an owned partition that were emitted
// and not yet committed.
type partition struct {
	spans     []*span // in offset order
	committed kgo.EpochOffset
	commit    kgo.EpochOffset // what may be committed: after the acked prefix
	dirty     bool
	// From the latest fetch, for the consumer lag (seen: there was one).
	end, logStart int64
	seen          bool
}

// span is the records of one partition in one emitted batch.
type span struct {
	last  int64
	epoch int32
	acked bool
}

var (
	_ core.Source      = (*Source)(nil)
	_ core.Provisioner = (*Source)(nil)
)

// New decodes the node's config.
func New(nc *core.NodeConfig) (core.Source, error) {
	s := &Source{name: nc.Name, cfg: Config{Format: "auto", Start: "earliest", Isolation: "read_committed",
		ClientID: "fluxstream", SessionTimeout: 45 * time.Second, RebalanceTimeout: 60 * time.Second,
		HeartbeatEvery: 3 * time.Second, CommitInterval: time.Second, MaxBatch: 1000, DialTimeout: 10 * time.Second}}
	s.cfg.Registry.Timeout = 10 * time.Second
	if err := nc.Decode(&s.cfg); err != nil {
		return nil, err
	}
	secrets := []string{s.cfg.SASL.Password, s.cfg.Registry.Password}
	if s.cfg.Registry.Password != "" {
		secrets = append(secrets, base64.StdEncoding.EncodeToString([]byte(s.cfg.Registry.Username+":"+s.cfg.Registry.Password)))
	}
	s.redact = logutil.NewRedactor(secrets...)
	return s, nil
}

// Options are the franz-go options of the config (without the group
// callbacks).
func (c *Config) Options() ([]kgo.Opt, error) {
	start := kgo.NewOffset().AtStart()
	if c.Start == "latest" {
		start = kgo.NewOffset().AtEnd()
	}
	iso := kgo.ReadCommitted()
	if c.Isolation == "read_uncommitted" {
		iso = kgo.ReadUncommitted()
	}
	opts, err := kafkaclient.Conn{Brokers: c.Brokers, ClientID: c.ClientID, DialTimeout: c.DialTimeout, TLS: c.TLS, SASL: c.SASL}.Options()
	if err != nil {
		return nil, err
	}
	opts = append(opts,
		kgo.ConsumerGroup(c.Group),
		kgo.ConsumeTopics(c.Topics...),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.DisableAutoCommit(),
		kgo.ConsumeResetOffset(start),
		kgo.FetchIsolationLevel(iso),
		kgo.SessionTimeout(c.SessionTimeout),
		kgo.RebalanceTimeout(c.RebalanceTimeout),
		kgo.HeartbeatInterval(c.HeartbeatEvery),
	)
	if c.Regex {
		opts = append(opts, kgo.ConsumeRegex())
	}
	if c.InstanceID != "" {
		opts = append(opts, kgo.InstanceID(c.InstanceID))
	}
	return opts, nil
}

// Provision creates the client and the registry client. Joining the
// group waits for Run.
func (s *Source) Provision(_ context.Context, nc core.NodeContext) error {
	s.log = nc.Logger
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.limit = logutil.NewLimiter(s.log, logutil.LogEvery, time.Now)
	s.dryRun = nc.DryRun
	s.parts = map[tp]*partition{}
	s.schemas = map[int]avro.Schema{}
	s.commitReq = make(chan struct{}, 1)
	if len(s.cfg.Registry.URLs) > 0 {
		rc := s.cfg.Registry
		httpClient := &http.Client{Timeout: rc.Timeout}
		if rc.TLS.Used() {
			tc, err := rc.TLS.Config()
			if err != nil {
				return fmt.Errorf("registry: %w", err)
			}
			httpClient.Transport = &http.Transport{TLSClientConfig: tc}
		}
		opts := []sr.ClientOpt{sr.URLs(rc.URLs...), sr.HTTPClient(httpClient), sr.UserAgent("fluxstream")}
		if rc.Username != "" {
			opts = append(opts, sr.BasicAuth(rc.Username, rc.Password))
		}
		cl, err := sr.NewClient(opts...)
		if err != nil {
			return s.redact.Error(fmt.Errorf("registry: %w", err))
		}
		s.reg = cl
	}
	opts, err := s.cfg.Options()
	if err != nil {
		return s.redact.Error(err)
	}
	opts = append(opts,
		kgo.OnPartitionsAssigned(s.assigned),
		kgo.OnPartitionsRevoked(s.revoked),
		kgo.OnPartitionsLost(s.lost),
	)
	cl, err := kgo.NewClient(opts...)
	// Under mu: ConsumerLag (metrics) may ask while the pipeline provisions.
	s.mu.Lock()
	s.client = cl
	s.mu.Unlock()
	return s.redact.Error(err)
}

func (s *Source) assigned(_ context.Context, _ *kgo.Client, m map[string][]int32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for topic, ps := range m {
		for _, p := range ps {
			s.parts[tp{topic, p}] = &partition{}
			n++
		}
	}
	s.log.Info("partitions assigned", "count", n, "partitions", fmtParts(m))
}

// revoked commits what is acknowledged of the revoked partitions and
// forgets the rest: the new owner consumes it again.
func (s *Source) revoked(ctx context.Context, cl *kgo.Client, m map[string][]int32) {
	s.mu.Lock()
	offsets := map[string]map[int32]kgo.EpochOffset{}
	dropped := 0
	for topic, ps := range m {
		for _, p := range ps {
			key := tp{topic, p}
			pt := s.parts[key]
			if pt == nil {
				continue
			}
			if pt.dirty {
				if offsets[topic] == nil {
					offsets[topic] = map[int32]kgo.EpochOffset{}
				}
				offsets[topic][p] = pt.commit
			}
			for _, sp := range pt.spans {
				if !sp.acked {
					dropped++
				}
			}
			delete(s.parts, key)
		}
	}
	s.mu.Unlock()
	if len(m) > 0 {
		s.log.Info("partitions revoked; committing what is acknowledged", "partitions", fmtParts(m), "unacknowledged_batches", dropped)
	}
	s.commitSync(ctx, cl, offsets)
}

func (s *Source) lost(_ context.Context, _ *kgo.Client, m map[string][]int32) {
	s.mu.Lock()
	for topic, ps := range m {
		for _, p := range ps {
			delete(s.parts, tp{topic, p})
		}
	}
	s.mu.Unlock()
	if len(m) > 0 {
		s.log.Warn("partitions lost (the group moved on without us); their uncommitted records come again from the new owner", "partitions", fmtParts(m))
	}
}

func fmtParts(m map[string][]int32) string {
	var b strings.Builder
	for topic, ps := range m {
		if b.Len() > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s%v", topic, ps)
	}
	return b.String()
}

func (s *Source) commitSync(ctx context.Context, cl *kgo.Client, offsets map[string]map[int32]kgo.EpochOffset) {
	if len(offsets) == 0 || s.dryRun {
		return
	}
	cl.CommitOffsetsSync(ctx, offsets, func(_ *kgo.Client, _ *kmsg.OffsetCommitRequest, resp *kmsg.OffsetCommitResponse, err error) {
		if err == nil {
			for _, t := range resp.Topics {
				for _, p := range t.Partitions {
					if perr := kerr.ErrorForCode(p.ErrorCode); perr != nil && err == nil {
						err = fmt.Errorf("%s[%d]: %w", t.Topic, p.Partition, perr)
					}
				}
			}
		}
		if err != nil {
			s.limit.Log(slog.LevelWarn, "commit", "offset commit failed; retried with the next commit (until then a restart sends those records again)",
				"error", s.redact.String(err.Error()))
			s.recommit(offsets)
		}
	})
}

// recommit marks offsets whose commit failed as still to be committed
// (unless a newer commit took their place), and asks the commit loop to
// try again: a commit lost to a rebalance or a busy coordinator must not
// be forgotten until the next acknowledgement.
func (s *Source) recommit(offsets map[string]map[int32]kgo.EpochOffset) {
	s.mu.Lock()
	for topic, parts := range offsets {
		for p, off := range parts {
			if pt := s.parts[tp{topic, p}]; pt != nil && pt.committed == off {
				pt.dirty = true
			}
		}
	}
	s.mu.Unlock()
	select {
	case s.commitReq <- struct{}{}:
	default:
	}
}

// Run consumes until ctx ends.
func (s *Source) Run(ctx context.Context, out core.Emitter) error {
	pingDone := make(chan struct{})
	pingCtx, stopPings := context.WithCancel(ctx)
	go func() {
		defer close(pingDone)
		s.pingLoop(pingCtx)
	}()
	defer func() {
		stopPings()
		<-pingDone
	}()
	commitDone := make(chan struct{})
	commitCtx, stopCommits := context.WithCancel(context.WithoutCancel(ctx))
	go func() {
		defer close(commitDone)
		s.commitLoop(commitCtx)
	}()
	defer func() {
		stopCommits()
		<-commitDone
	}()
	for {
		fs := s.client.PollRecords(ctx, s.cfg.MaxBatch)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if fs.IsClientClosed() {
			return nil
		}
		fs.EachError(func(topic string, p int32, err error) {
			if errors.Is(err, context.Canceled) {
				return
			}
			s.limit.Log(slog.LevelWarn, "fetch", "fetch failed; retrying", "topic", topic, "partition", p, "error", s.redact.String(err.Error()))
		})
		s.noteEnds(fs)
		var recs []*core.Record
		var ms []*kgo.Record
		fs.EachRecord(func(m *kgo.Record) { ms = append(ms, m) })
		if len(ms) == 0 {
			continue
		}
		for _, m := range ms {
			recs = append(recs, s.decode(ctx, m))
		}
		spans, recs := s.track(ms, recs)
		if len(recs) == 0 {
			continue
		}
		err := out.Emit(ctx, recs, func() { s.acked(spans) })
		if err != nil {
			return err
		}
	}
}

// track registers the batch's spans with their partitions, keeping only
// records of partitions still owned (a revoke may have come between the
// poll and here: those records are the new owner's).
func (s *Source) track(ms []*kgo.Record, recs []*core.Record) ([]trackedSpan, []*core.Record) {
	s.mu.Lock()
	defer s.mu.Unlock()
	type agg struct {
		last  int64
		epoch int32
	}
	per := map[tp]*agg{}
	var order []tp
	kept := recs[:0]
	for i, m := range ms {
		key := tp{m.Topic, m.Partition}
		if s.parts[key] == nil {
			continue
		}
		a := per[key]
		if a == nil {
			a = &agg{}
			per[key] = a
			order = append(order, key)
		}
		a.last, a.epoch = m.Offset, m.LeaderEpoch
		kept = append(kept, recs[i])
	}
	spans := make([]trackedSpan, 0, len(order))
	for _, key := range order {
		pt := s.parts[key]
		sp := &span{last: per[key].last, epoch: per[key].epoch}
		pt.spans = append(pt.spans, sp)
		spans = append(spans, trackedSpan{key: key, part: pt, span: sp})
	}
	return spans, kept
}

type trackedSpan struct {
	key  tp
	part *partition
	span *span
}

// acked marks a batch's spans acknowledged and advances each partition's
// committable offset over its contiguous acknowledged prefix.
func (s *Source) acked(spans []trackedSpan) {
	s.mu.Lock()
	advanced := false
	for _, ts := range spans {
		ts.span.acked = true
		if s.parts[ts.key] != ts.part {
			continue // revoked since: the new owner has it
		}
		pt := ts.part
		n := 0
		for n < len(pt.spans) && pt.spans[n].acked {
			pt.commit = kgo.EpochOffset{Epoch: pt.spans[n].epoch, Offset: pt.spans[n].last + 1}
			pt.dirty = true
			advanced = true
			n++
		}
		pt.spans = pt.spans[n:]
	}
	s.mu.Unlock()
	if advanced {
		select {
		case s.commitReq <- struct{}{}:
		default:
		}
	}
}

// commitLoop commits the acknowledged offsets at most every
// commit_interval.
func (s *Source) commitLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.CommitInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.commitReq:
		}
		s.commitAcked(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pendingOffsets takes the dirty committable offsets of owned partitions.
func (s *Source) pendingOffsets() map[string]map[int32]kgo.EpochOffset {
	s.mu.Lock()
	defer s.mu.Unlock()
	offsets := map[string]map[int32]kgo.EpochOffset{}
	for key, pt := range s.parts {
		if !pt.dirty {
			continue
		}
		if offsets[key.topic] == nil {
			offsets[key.topic] = map[int32]kgo.EpochOffset{}
		}
		offsets[key.topic][key.part] = pt.commit
		pt.dirty = false
		pt.committed = pt.commit
	}
	return offsets
}

func (s *Source) hasDirty() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, pt := range s.parts {
		if pt.dirty {
			return true
		}
	}
	return false
}

func (s *Source) commitAcked(ctx context.Context) {
	s.commitSync(ctx, s.client, s.pendingOffsets())
}

// Close commits what is acknowledged (acks can come after Run returned:
// the sinks' buffers sync on close) and leaves the group.
func (s *Source) Close() error {
	s.mu.Lock()
	if s.closed || s.client == nil {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s.commitAcked(ctx)
	for s.hasDirty() && ctx.Err() == nil { // a failed commit marked them again
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
		}
		s.commitAcked(ctx)
	}
	s.client.Close() // leaves the group; revoked commits again (nothing dirty)
	s.limit.Flush()
	return nil
}

// decode turns a message into a record; what cannot be decoded becomes an
// invalid record naming where it was.
func (s *Source) decode(ctx context.Context, m *kgo.Record) *core.Record {
	r, err := s.decodeValue(ctx, m)
	if err == nil {
		return r
	}
	where := fmt.Sprintf("kafka topic %s partition %d offset %d", m.Topic, m.Partition, m.Offset)
	sum := sha256.Sum256(fmt.Appendf(nil, "%s/%d/%d", m.Topic, m.Partition, m.Offset))
	raw := string(m.Value)
	if !utf8.Valid(m.Value) {
		raw = "base64:" + base64.StdEncoding.EncodeToString(m.Value)
	}
	if len(raw) > maxRaw {
		raw = raw[:maxRaw] + "..."
	}
	s.limit.Log(slog.LevelWarn, "invalid", "undecodable message; passed on as an invalid record", "where", where, "error", err.Error())
	return &core.Record{
		Kind:    core.KindInvalid,
		ID:      "invalid:" + hex.EncodeToString(sum[:12]),
		Source:  s.name,
		Invalid: &core.Invalid{Error: err.Error(), Where: where, Raw: raw},
	}
}

const maxRaw = 64 << 10

func header(m *kgo.Record, key string) string {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// format picks the value's encoding.
func (s *Source) format(m *kgo.Record) string {
	if s.cfg.Format != "auto" {
		return s.cfg.Format
	}
	switch header(m, "content-type") {
	case "application/json":
		return "json"
	case schemas.ContentType(schemas.FormatConfluent):
		return schemas.FormatConfluent
	case schemas.ContentType(schemas.FormatSingleObject):
		return schemas.FormatSingleObject
	}
	v := m.Value
	switch {
	case len(v) > 0 && v[0] == '{':
		return "json"
	case len(v) > 0 && v[0] == 0:
		return schemas.FormatConfluent
	case len(v) > 1 && v[0] == 0xc3 && v[1] == 0x01:
		return schemas.FormatSingleObject
	}
	return "unknown"
}

func (s *Source) decodeValue(ctx context.Context, m *kgo.Record) (*core.Record, error) {
	var r *core.Record
	switch f := s.format(m); f {
	case "json":
		r = new(core.Record)
		if err := r.UnmarshalJSON(m.Value); err != nil {
			return nil, fmt.Errorf("not a fluxstream JSON record: %w", err)
		}
	case schemas.FormatConfluent:
		v := m.Value
		if len(v) < 5 || v[0] != 0 {
			return nil, fmt.Errorf("not Confluent wire format (magic byte %s, want 0 and a schema id)", firstByte(v))
		}
		id := int(binary.BigEndian.Uint32(v[1:5]))
		writer, err := s.writerSchema(ctx, id)
		if err != nil {
			return nil, err
		}
		if r, err = schemas.UnmarshalFrom(writer, v[5:]); err != nil {
			return nil, fmt.Errorf("schema id %d: %w", id, err)
		}
	case schemas.FormatSingleObject:
		v := m.Value
		if len(v) < 10 || v[0] != 0xc3 || v[1] != 0x01 {
			return nil, fmt.Errorf("not Avro single-object encoding (magic %s, want C3 01)", firstByte(v))
		}
		writer, err := singleObjectSchema(v[2:10])
		if err != nil {
			return nil, err
		}
		if r, err = schemas.UnmarshalFrom(writer, v[10:]); err != nil {
			return nil, err
		}
	default:
		return nil, fmt.Errorf("unknown encoding (magic byte %s; want JSON, Confluent 0x00 or single-object C3 01)", firstByte(m.Value))
	}
	if r.Kind == "" || r.ID == "" {
		return nil, errors.New("not a fluxstream record (no kind or id)")
	}
	return r, nil
}

func firstByte(v []byte) string {
	if len(v) == 0 {
		return "none (empty value)"
	}
	return fmt.Sprintf("0x%02x", v[0])
}

// errUnknownSchema is a registry that does not know an id: the message
// becomes an invalid record. Other registry failures are retried.
var errUnknownSchema = errors.New("unknown schema id")

// writerSchema returns the registry's schema for id, cached (an id never
// changes its schema).
func (s *Source) writerSchema(ctx context.Context, id int) (avro.Schema, error) {
	s.schemaMu.Lock()
	sch, ok := s.schemas[id]
	s.schemaMu.Unlock()
	if ok {
		return sch, nil
	}
	if s.reg == nil {
		return nil, fmt.Errorf("schema id %d: no registry configured (registry.urls) to look it up", id)
	}
	backoff := 100 * time.Millisecond
	for {
		rctx, cancel := context.WithTimeout(ctx, s.cfg.Registry.Timeout)
		ss, err := s.reg.SchemaByID(rctx, id)
		cancel()
		if err == nil {
			// A cache of its own: the writer's names must not meet
			// the reader's (same names, maybe other fields).
			sch, err := avro.ParseWithCache(ss.Schema, "", &avro.SchemaCache{})
			if err != nil {
				return nil, fmt.Errorf("schema id %d: the registry's schema does not parse: %w", id, err)
			}
			s.schemaMu.Lock()
			s.schemas[id] = sch
			s.schemaMu.Unlock()
			return sch, nil
		}
		var re *sr.ResponseError
		if errors.As(err, &re) && (re.StatusCode == http.StatusNotFound || re.ErrorCode == 40403) {
			return nil, fmt.Errorf("%w %d: %s", errUnknownSchema, id, s.redact.String(re.Message))
		}
		s.limit.Log(slog.LevelWarn, "registry", "schema registry unreachable; retrying (the partition waits)", "id", id, "error", s.redact.String(err.Error()))
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// singleObjectSchema finds the writer schema of a single-object value by
// its fingerprint: the current record schema, or one of its history.
func singleObjectSchema(fp []byte) (avro.Schema, error) {
	for _, k := range knownSchemas() {
		if string(k.fp) == string(fp) {
			return k.schema, nil
		}
	}
	return nil, fmt.Errorf("schema fingerprint %x is not a fluxstream record schema", fp)
}

type knownSchema struct {
	fp     []byte // as single-object encoding writes it (little-endian)
	schema avro.Schema
}

var known struct {
	once sync.Once
	list []knownSchema
}

// knownSchemas are the record schemas fluxstream has written: the current
// one (resolved with nil) and the first milestone's.
func knownSchemas() []knownSchema {
	known.once.Do(func() {
		le := func(s avro.Schema) []byte {
			return binary.LittleEndian.AppendUint64(nil, avrorec.Fingerprint(s))
		}
		known.list = []knownSchema{{fp: le(avrorec.Schema), schema: nil}, {fp: le(avrorec.V1), schema: avrorec.V1}}
	})
	return known.list
}

// noteEnds keeps each owned partition's high watermark from a fetch.
func (s *Source) noteEnds(fs kgo.Fetches) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fs.EachPartition(func(p kgo.FetchTopicPartition) {
		if pt := s.parts[tp{p.Topic, p.Partition}]; pt != nil && p.Err == nil && p.HighWatermark >= 0 {
			pt.end, pt.logStart, pt.seen = p.HighWatermark, p.LogStartOffset, true
		}
	})
}

// PartitionLag is one partition's consumer lag.
type PartitionLag struct {
	Topic     string
	Partition int32
	Lag       int64 // records between the group's committed offset and the high watermark
}

// ConsumerLag reports the lag of every owned partition a fetch has shown
// (metrics: LagMetric), sorted by topic and partition.
func (s *Source) ConsumerLag() []PartitionLag {
	s.mu.Lock()
	cl := s.client
	s.mu.Unlock()
	if cl == nil {
		return nil
	}
	committed := cl.CommittedOffsets()
	s.mu.Lock()
	out := make([]PartitionLag, 0, len(s.parts))
	for key, pt := range s.parts {
		if !pt.seen {
			continue
		}
		from := max(pt.logStart, 0) // nothing committed yet: the whole partition
		if c, ok := committed[key.topic][key.part]; ok && c.Offset >= 0 {
			from = c.Offset
		}
		out = append(out, PartitionLag{Topic: key.topic, Partition: key.part, Lag: max(pt.end-from, 0)})
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b PartitionLag) int {
		return cmp.Or(strings.Compare(a.Topic, b.Topic), cmp.Compare(a.Partition, b.Partition))
	})
	return out
}
