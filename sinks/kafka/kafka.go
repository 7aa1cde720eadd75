// Package kafka is the `kafka` sink, on franz-go: an idempotent producer
// with acks=all, key = job id (per-job order within a partition), headers
// naming the event, the schema and the cluster, TLS and SASL. A batch is
// acknowledged to the delivery layer only once the brokers acknowledged
// every record of it.
package kafka

import (
	"context"
	"crypto/tls"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/internal/kafkaclient"
	"github.com/fluxstream/fluxstream/internal/logutil"
	"github.com/fluxstream/fluxstream/schemas"
)

// Sample is the sample config.
//
//go:embed sample.yaml
var Sample string

// Register adds the kafka sink to r.
func Register(r *core.Registry) {
	r.RegisterSink("kafka", "Apache Kafka (and Kafka-compatible brokers) through franz-go", New)
}

// Header names set on every Kafka record.
const (
	HeaderID       = "fluxstream-id"        // the record's idempotency key (event id)
	HeaderKind     = "fluxstream-kind"      // event | purge | invalid
	HeaderEvent    = "fluxstream-event"     // event name
	HeaderCluster  = "fluxstream-cluster"   // source cluster
	HeaderSchemaID = "fluxstream-schema-id" // schema registry id, when Avro with a registry
	HeaderContent  = "content-type"
)

// Config is the sink's config.
type Config struct {
	Brokers []string `yaml:"brokers"`
	// Topic may hold {{cluster}}, {{source}}, {{kind}}, {{event}}, {{queue}}
	// and {{user}}; other characters Kafka refuses in topic names become
	// "_". One topic keeps every event of a job in order.
	Topic string `yaml:"topic"`
	// Key is "job" (the job id: per-job order) or "event" (the event id).
	Key         string            `yaml:"key"`
	Headers     map[string]string `yaml:"headers"` // extra static headers
	ClientID    string            `yaml:"client_id"`
	Compression string            `yaml:"compression"` // none, gzip, snappy, lz4, zstd
	Linger      time.Duration     `yaml:"linger"`
	BatchBytes  core.ByteSize     `yaml:"batch_max_bytes"`
	MaxBuffered int               `yaml:"max_buffered_records"`
	// InflightBatches is how many batches may wait for their
	// acknowledgement at once: the next ones are produced meanwhile, in
	// order. 1 waits for each batch before taking the next.
	InflightBatches int `yaml:"inflight_batches"`
	// Idempotent keeps per-partition order and drops broker-side
	// duplicates on retries; turn it off only for brokers without it.
	Idempotent *bool `yaml:"idempotent"`
	// DeliveryTimeout bounds how long one Write waits for the brokers to
	// acknowledge its records. Past it, Write reports a retryable error
	// (the runtime logs "write failed; retrying", backs off, tries again,
	// and logs "sink recovered" once through); the records stay queued in
	// the idempotent producer, which goes on retrying them in order, and
	// the next attempt waits on those same records instead of producing
	// them twice.
	DeliveryTimeout time.Duration `yaml:"delivery_timeout"`
	DialTimeout     time.Duration `yaml:"dial_timeout"`
	TLS             TLSConfig     `yaml:"tls"`
	SASL            SASLConfig    `yaml:"sasl"`
	// ExactlyOnce writes every batch in a Kafka transaction together
	// with the source's checkpoint (see exactlyonce.go); it needs
	// buffer: {type: memory} and one flux or replay source that feeds
	// only this sink.
	ExactlyOnce bool `yaml:"exactly_once"`
	// TransactionalID names the transactional producer; a process that
	// starts with it fences the one before. Default:
	// fluxstream-CLUSTER-NODE.
	TransactionalID string `yaml:"transactional_id"`
	// CheckpointTopic holds the checkpoint (compacted, one partition,
	// created if missing). Default: the topic (with {{cluster}} filled
	// in) and ".fluxstream-checkpoint".
	CheckpointTopic    string        `yaml:"checkpoint_topic"`
	TransactionTimeout time.Duration `yaml:"transaction_timeout"`
}

// TLSConfig enables TLS to the brokers.
type TLSConfig = kafkaclient.TLS

// SASLConfig authenticates to the brokers.
type SASLConfig = kafkaclient.SASL

var templateRe = regexp.MustCompile(`\{\{\s*([a-z]+)\s*\}\}`)

var templateVars = map[string]bool{"cluster": true, "source": true, "kind": true, "event": true, "queue": true, "user": true}

// Validate checks the decoded config.
func (c *Config) Validate() error {
	errs := kafkaclient.CheckBrokers(c.Brokers, kafkaclient.HostPort)
	if c.Topic == "" {
		errs = append(errs, core.Fieldf("topic", "must be set"))
	}
	for _, m := range templateRe.FindAllStringSubmatch(c.Topic, -1) {
		if !templateVars[m[1]] {
			errs = append(errs, core.Fieldf("topic", "unknown placeholder {{%s}} (cluster, source, kind, event, queue, user)", m[1]))
		}
	}
	switch c.Key {
	case "job", "event":
	default:
		errs = append(errs, core.Fieldf("key", "unknown key %q (job, event)", c.Key))
	}
	if _, err := codec(c.Compression); err != nil {
		errs = append(errs, core.Fieldf("compression", "%v", err))
	}
	if err := c.SASL.CheckMechanism(); err != nil {
		errs = append(errs, err)
	}
	if c.SASL.Mechanism != "" && c.SASL.Username == "" {
		errs = append(errs, core.Fieldf("sasl.username", "must be set with a mechanism"))
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		errs = append(errs, core.Fieldf("tls", "cert_file and key_file go together"))
	}
	if c.DeliveryTimeout > 0 && c.DeliveryTimeout < 100*time.Millisecond {
		errs = append(errs, core.Fieldf("delivery_timeout", "%s is too short (at least 100ms)", c.DeliveryTimeout))
	}
	if c.InflightBatches < 1 || c.InflightBatches > 64 {
		errs = append(errs, core.Fieldf("inflight_batches", "%d is out of range (1 to 64)", c.InflightBatches))
	}
	if c.ExactlyOnce && !*c.Idempotent {
		errs = append(errs, core.Fieldf("idempotent", "exactly_once needs the idempotent producer"))
	}
	if c.TransactionTimeout < time.Second || c.TransactionTimeout > 15*time.Minute {
		errs = append(errs, core.Fieldf("transaction_timeout", "%s is out of range (1s to 15m, Kafka's transaction.max.timeout.ms by default)", c.TransactionTimeout))
	}
	if c.DeliveryTimeout <= 0 || c.DialTimeout <= 0 || c.MaxBuffered <= 0 || c.BatchBytes <= 0 {
		errs = append(errs, core.Fieldf("", "delivery_timeout, dial_timeout, max_buffered_records and batch_max_bytes must be positive"))
	}
	return errors.Join(errs...)
}

func codec(name string) (kgo.CompressionCodec, error) {
	switch name {
	case "none":
		return kgo.NoCompression(), nil
	case "gzip":
		return kgo.GzipCompression(), nil
	case "snappy":
		return kgo.SnappyCompression(), nil
	case "lz4":
		return kgo.Lz4Compression(), nil
	case "zstd":
		return kgo.ZstdCompression(), nil
	}
	return kgo.NoCompression(), fmt.Errorf("unknown codec %q (none, gzip, snappy, lz4, zstd)", name)
}

// produceRequestTimeout is how long a broker may take to answer a
// produce request (franz-go's default, kept explicit): the broker-side
// acks=all wait, and with RequestTimeoutOverhead the read deadline after
// which a silent connection is cut and the request retried.
const produceRequestTimeout = 10 * time.Second

// Sink produces to Kafka.
type Sink struct {
	cfg    Config
	name   string
	log    *slog.Logger
	limit  *logutil.Limiter
	redact *logutil.Redactor
	kgoLog *kgoLogger
	client *kgo.Client
	topic  func(*core.Record) string
	// headerKeys are the config's extra headers, sorted once.
	headerKeys []string

	// inflight holds the records handed to the producer whose outcome
	// the runtime has not been told yet (a Write gave up waiting on
	// them). The runtime retries a failed batch with the same records,
	// so the next Write finds them here and waits on them again.
	mu       sync.Mutex
	inflight map[*core.Record]*produced

	eo *exactlyOnce // exactly_once only
}

// produced is the outcome of one record handed to the producer.
type produced struct {
	done chan struct{} // closed by the promise
	err  error         // set before done is closed
}

var (
	_ core.Sink        = (*Sink)(nil)
	_ core.Provisioner = (*Sink)(nil)
	_ core.Preparer    = (*Sink)(nil)
	_ core.DryRunner   = (*Sink)(nil)
	_ core.Pipeliner   = (*Sink)(nil)
)

// New decodes the node's config.
func New(nc *core.NodeConfig) (core.Sink, error) {
	s := &Sink{name: nc.Name, cfg: Config{Key: "job", ClientID: "fluxstream", Compression: "lz4",
		Linger: 5 * time.Millisecond, BatchBytes: 1 << 20, MaxBuffered: 100000, InflightBatches: 4,
		DeliveryTimeout: 30 * time.Second, DialTimeout: 10 * time.Second, TransactionTimeout: 40 * time.Second}}
	t := true
	s.cfg.Idempotent = &t
	if err := nc.Decode(&s.cfg); err != nil {
		return nil, err
	}
	if s.cfg.ExactlyOnce {
		eo, err := newExactlyOnce(nc, &s.cfg)
		if err != nil {
			return nil, err
		}
		s.eo = eo
	}
	s.topic = topicFunc(s.cfg.Topic)
	s.headerKeys = sortedKeys(s.cfg.Headers)
	s.redact = s.cfg.redactor()
	return s, nil
}

// redactor knows the config's secrets.
func (c *Config) redactor() *logutil.Redactor {
	secrets := []string{c.SASL.Password}
	for _, b := range c.Brokers {
		if at := strings.LastIndex(b, "@"); at >= 0 {
			pre := b[:at]
			if i := strings.Index(pre, "://"); i >= 0 {
				pre = pre[i+3:]
			}
			if _, pass, ok := strings.Cut(pre, ":"); ok {
				secrets = append(secrets, pass)
			}
		}
	}
	return logutil.NewRedactor(secrets...)
}

// brokers is the broker list for messages.
func (s *Sink) brokers() string {
	return s.redact.String(strings.Join(s.cfg.Brokers, ","))
}

// Options builds the franz-go options of the config.
func (c *Config) Options() ([]kgo.Opt, error) {
	opts, err := kafkaclient.Conn{Brokers: c.Brokers, ClientID: c.ClientID, DialTimeout: c.DialTimeout, TLS: c.TLS, SASL: c.SASL}.Options()
	if err != nil {
		return nil, err
	}
	comp, _ := codec(c.Compression)
	opts = append(opts,
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ProducerBatchCompression(comp),
		kgo.ProducerLinger(c.Linger),
		kgo.ProducerBatchMaxBytes(int32(c.BatchBytes)),
		kgo.MaxBufferedRecords(c.MaxBuffered),
		// No RecordDeliveryTimeout, no RecordRetries limit, no
		// AllowIdempotentProduceCancellation, and no deadline on the
		// records' context: an idempotent franz-go producer never fails
		// a batch whose request went out without an answer (sink.go:
		// canFailFromLoadErrs is cleared when the batch is written,
		// unsureIfProduced set on REQUEST_TIMED_OUT), so those bounds do
		// not bound the wait of a dead broker; and where they do fire
		// (batches not yet sent) they fail a partition's records behind
		// ones still in flight, which a retry would then produce after
		// them, out of order. Write bounds its own wait instead
		// (delivery_timeout) and leaves the records in the producer.
		kgo.ProduceRequestTimeout(produceRequestTimeout),
		kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)),
	)
	if !*c.Idempotent {
		opts = append(opts, kgo.DisableIdempotentWrite())
	}
	return opts, nil
}

// Provision creates the client (it connects lazily). With exactly_once,
// OpenCheckpoint made it already.
func (s *Sink) Provision(_ context.Context, nc core.NodeContext) error {
	s.setup(nc.Logger)
	if nc.DryRun {
		return nil
	}
	return s.newClient()
}

// setup makes the logging parts, once.
func (s *Sink) setup(log *slog.Logger) {
	if s.limit != nil {
		return
	}
	s.log = log
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	s.limit = logutil.NewLimiter(s.log, logutil.LogEvery, time.Now)
	s.kgoLog = &kgoLogger{limit: s.limit, redact: s.redact}
	s.inflight = make(map[*core.Record]*produced)
}

// newClient makes the producer, once: transactional with exactly_once.
func (s *Sink) newClient() error {
	if s.client != nil {
		return nil
	}
	opts, err := s.cfg.Options()
	if err != nil {
		return s.redact.Error(err)
	}
	opts = append(opts, kgo.WithLogger(s.kgoLog))
	if s.eo != nil {
		opts = append(opts, kgo.TransactionalID(s.eo.txid), kgo.TransactionTimeout(s.cfg.TransactionTimeout))
	}
	s.client, err = kgo.NewClient(opts...)
	return s.redact.Error(err)
}

// Prepare checks the brokers before the pipeline starts. Errors a retry
// cannot fix (unknown host, failed authentication, TLS) stop the start;
// brokers that are merely down are logged: records spool until they
// answer, Flux is not held up.
func (s *Sink) Prepare(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout+5*time.Second)
	defer cancel()
	err := s.client.Ping(ctx)
	if err == nil {
		return nil
	}
	if fatal := classifyConnectError(err); fatal != nil {
		return s.redact.Error(fmt.Errorf("kafka brokers %s: %w", s.brokers(), fatal))
	}
	s.limit.Log(slog.LevelError, "unreachable", "kafka brokers unreachable at start; records are spooled and sent when they answer",
		"brokers", s.brokers(), "error", s.redact.String(err.Error()))
	return nil
}

// classifyConnectError returns a clear error for failures a retry cannot
// fix, nil for transient ones.
func classifyConnectError(err error) error {
	var dnsErr *net.DNSError
	switch {
	case errors.As(err, &dnsErr) && dnsErr.IsNotFound:
		return fmt.Errorf("unknown host %q (check brokers:): %w", dnsErr.Name, err)
	case errors.Is(err, kerr.SaslAuthenticationFailed), errors.Is(err, kerr.IllegalSaslState), errors.Is(err, kerr.UnsupportedSaslMechanism):
		return fmt.Errorf("SASL authentication failed (check sasl: username, password, mechanism): %w", err)
	case errors.Is(err, kerr.TopicAuthorizationFailed), errors.Is(err, kerr.ClusterAuthorizationFailed):
		return fmt.Errorf("not authorized (check the ACLs of the SASL user): %w", err)
	}
	var certErr *tls.CertificateVerificationError
	var recErr tls.RecordHeaderError
	if errors.As(err, &certErr) || errors.As(err, &recErr) {
		return fmt.Errorf("TLS handshake failed (check tls:): %w", err)
	}
	return nil
}

// topicFunc compiles the topic template.
func topicFunc(tmpl string) func(*core.Record) string {
	if !strings.Contains(tmpl, "{{") {
		return func(*core.Record) string { return tmpl }
	}
	return func(r *core.Record) string {
		return templateRe.ReplaceAllStringFunc(tmpl, func(m string) string {
			name := templateRe.FindStringSubmatch(m)[1]
			return sanitizeTopic(placeholder(r, name))
		})
	}
}

func placeholder(r *core.Record, name string) string {
	switch name {
	case "cluster":
		return r.Cluster
	case "source":
		return r.Source
	case "kind":
		return string(r.Kind)
	case "event":
		return r.EventName()
	case "queue":
		if r.Job != nil {
			return r.Job.Queue
		}
	case "user":
		if r.Job != nil {
			if r.Job.Username != "" {
				return r.Job.Username
			}
			return strconv.FormatUint(uint64(r.Job.UserID), 10)
		}
	}
	return ""
}

func sanitizeTopic(s string) string {
	if s == "" {
		return "_"
	}
	b := []byte(s)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			b[i] = '_'
		}
	}
	return string(b)
}

// Message is what one record becomes on Kafka.
func (s *Sink) Message(r *core.Record) (*kgo.Record, error) {
	var m messages
	return m.add(s, r)
}

// messages builds a batch's Kafka records with a few allocations for the
// whole batch instead of a dozen for each record: the records, their
// headers and their keys and header values come from slabs (the producer
// only reads them).
type messages struct {
	recs  []kgo.Record
	hdrs  []kgo.RecordHeader
	bytes []byte
}

func newMessages(n int) *messages {
	return &messages{recs: make([]kgo.Record, 0, n), hdrs: make([]kgo.RecordHeader, 0, 7*n), bytes: make([]byte, 0, 96*n)}
}

// bytesOf copies v into the byte slab.
func (m *messages) bytesOf(v string) []byte {
	start := len(m.bytes)
	m.bytes = append(m.bytes, v...)
	return m.bytes[start:len(m.bytes):len(m.bytes)]
}

func (m *messages) add(s *Sink, r *core.Record) (*kgo.Record, error) {
	value, contentType := []byte(nil), "application/json"
	if e := r.Encoded; e != nil {
		value, contentType = e.Value, schemas.ContentType(e.Format)
	} else {
		js, err := r.JSON()
		if err != nil {
			return nil, err
		}
		value = js
	}
	var key []byte
	if id := r.JobID(); id != 0 && s.cfg.Key != "event" {
		start := len(m.bytes)
		m.bytes = strconv.AppendUint(m.bytes, id, 10)
		key = m.bytes[start:len(m.bytes):len(m.bytes)]
	} else if s.cfg.Key == "event" {
		key = m.bytesOf(r.ID)
	} else {
		key = m.bytesOf(r.Key())
	}
	first := len(m.hdrs)
	add := func(k, v string) {
		if v != "" {
			m.hdrs = append(m.hdrs, kgo.RecordHeader{Key: k, Value: m.bytesOf(v)})
		}
	}
	add(HeaderID, r.ID)
	add(HeaderKind, string(r.Kind))
	if r.Event != nil {
		add(HeaderEvent, r.Event.Name)
	}
	add(HeaderCluster, r.Cluster)
	add(HeaderContent, contentType)
	if e := r.Encoded; e != nil {
		switch {
		case e.SchemaID == schemas.DryRunSchemaID:
			add(HeaderSchemaID, "(registry id)")
		case e.SchemaID != 0:
			start := len(m.bytes)
			m.bytes = strconv.AppendInt(m.bytes, int64(e.SchemaID), 10)
			m.hdrs = append(m.hdrs, kgo.RecordHeader{Key: HeaderSchemaID, Value: m.bytes[start:len(m.bytes):len(m.bytes)]})
		}
		for _, k := range sortedKeys(e.Headers) {
			add(k, e.Headers[k])
		}
	}
	for _, k := range s.headerKeys {
		add(k, s.cfg.Headers[k])
	}
	if len(m.recs) == cap(m.recs) {
		m.recs = make([]kgo.Record, 0, max(cap(m.recs), 1)) // earlier records keep their slab
	}
	m.recs = append(m.recs, kgo.Record{Topic: s.topic(r), Key: key, Value: value, Headers: m.hdrs[first:len(m.hdrs):len(m.hdrs)]})
	return &m.recs[len(m.recs)-1], nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// Write produces the batch and returns once the brokers acknowledged every
// record (acks=all), or after delivery_timeout with the records not yet
// acknowledged failed as retryable. Records that failed are reported per
// index: the runtime retries those, or dead-letters the ones Kafka refuses
// for good (too large, invalid).
//
// Records still in the producer when Write gives up stay there: the
// idempotent producer keeps retrying them in order, and the runtime's
// retry of the same records waits on them again rather than producing
// them twice. New records are produced only when none of the batch is
// still in flight, so that a record failed by the producer and produced
// again never overtakes one queued before it.
func (s *Sink) Write(ctx context.Context, batch []*core.Record) error {
	if len(batch) == 0 {
		return nil
	}
	if s.eo != nil {
		return s.writeTxn(ctx, batch)
	}
	w := s.newWrite(batch)
	defer w.timer.Stop()

	// Records an earlier attempt left in the producer: wait on them
	// first, and produce nothing new while any is in flight.
	s.mu.Lock()
	if len(s.inflight) > 0 {
		s.forgetAbandonedLocked(batch)
	}
	reattached := false
	for i, r := range batch {
		if p := s.inflight[r]; p != nil {
			w.waits[i] = p
			reattached = true
		}
	}
	s.mu.Unlock()
	if reattached {
		if !s.wait(ctx, w.timer, w.waits) {
			return s.unacked(ctx, batch, w.waits, nil, &w.be, w.firstErr, errWaitingForEarlier)
		}
		for i, p := range w.waits {
			if p == nil {
				continue
			}
			s.forget(batch[i])
			w.waits[i] = nil
			if p.err == nil {
				w.ok[i] = true
			} else if isPermanent(p.err) {
				w.fail(s, i, p.err)
			} // else: produced again below, in order
		}
	}
	s.produce(ctx, w, s.cfg.MaxBuffered-int(s.client.BufferedProduceRecords()))
	return s.finish(ctx, w)
}

// PipelineDepth is inflight_batches, but 1 with exactly_once: each batch
// is a transaction, and a producer has one open at a time.
func (s *Sink) PipelineDepth() int {
	if s.eo != nil {
		return 1
	}
	return s.cfg.InflightBatches
}

// Send produces the batch and returns the wait for its acknowledgement:
// the next batches are produced while the brokers acknowledge this one,
// in order behind it. It takes the batch only when the producer has room
// for all of it, so that no record of it is left for a retry behind the
// batches sent after it.
func (s *Sink) Send(ctx context.Context, batch []*core.Record) (func(context.Context) error, bool) {
	room := s.cfg.MaxBuffered - int(s.client.BufferedProduceRecords())
	if room < len(batch) {
		return nil, false
	}
	s.mu.Lock()
	for _, r := range batch {
		if s.inflight[r] != nil { // an earlier attempt's: Write knows how to wait for it
			s.mu.Unlock()
			return nil, false
		}
	}
	s.mu.Unlock()
	w := s.newWrite(batch)
	s.produce(ctx, w, room)
	return func(ctx context.Context) error {
		defer w.timer.Stop()
		return s.finish(ctx, w)
	}, true
}

// write is one attempt at a batch: what was produced, and how each record
// ended.
type write struct {
	batch    []*core.Record
	waits    []*produced
	ok       []bool
	be       core.BatchError
	firstErr error // first retryable failure, for the message
	notSent  error
	timer    *time.Timer // delivery_timeout, from the attempt's start
}

func (s *Sink) newWrite(batch []*core.Record) *write {
	return &write{batch: batch, waits: make([]*produced, len(batch)), ok: make([]bool, len(batch)),
		notSent: errNotSent, timer: time.NewTimer(s.cfg.DeliveryTimeout)}
}

func (w *write) fail(s *Sink, i int, err error) {
	if isPermanent(err) {
		err = core.Permanent(fmt.Errorf("kafka refused the record for good: %w", s.redact.Error(err)))
	} else {
		err = s.redact.Error(err)
		if w.firstErr == nil {
			w.firstErr = err
		}
	}
	w.be.Fail(i, err)
}

// produce hands the producer, in batch order, every record of w not yet
// acknowledged, as far as room goes.
func (s *Sink) produce(ctx context.Context, w *write, room int) {
	msgs := newMessages(min(len(w.batch), max(room, 0)))
	for i, r := range w.batch {
		if w.ok[i] || w.be.Failed[i] != nil {
			continue
		}
		m, err := msgs.add(s, r)
		if err != nil {
			w.be.Fail(i, core.Permanent(err))
			continue
		}
		if room <= 0 {
			// Produce would block on a full producer: the rest waits
			// for the next attempt, still in order.
			w.notSent = errProducerFull
			break
		}
		room--
		p := &produced{done: make(chan struct{})}
		s.mu.Lock()
		s.inflight[r] = p
		s.mu.Unlock()
		s.client.Produce(ctx, m, func(_ *kgo.Record, err error) {
			p.err = err
			close(p.done)
		})
		w.waits[i] = p
	}
}

// finish waits for what produce handed over and reports each record.
func (s *Sink) finish(ctx context.Context, w *write) error {
	if !s.wait(ctx, w.timer, w.waits) {
		return s.unacked(ctx, w.batch, w.waits, w.ok, &w.be, w.firstErr, w.notSent)
	}
	for i, p := range w.waits {
		if p == nil {
			if !w.ok[i] && w.be.Failed[i] == nil {
				w.be.Fail(i, w.notSent)
			}
			continue
		}
		s.forget(w.batch[i])
		if p.err != nil {
			w.fail(s, i, p.err)
		}
	}
	return s.batchErr(w.batch, &w.be, w.firstErr)
}

// wait waits for every record of waits, the timer or ctx; it reports
// whether every record finished.
func (s *Sink) wait(ctx context.Context, timer *time.Timer, waits []*produced) bool {
	for _, p := range waits {
		if p == nil {
			continue
		}
		select {
		case <-p.done:
		case <-timer.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
	return true
}

// unacked ends a Write that stopped waiting: finished records are
// reported as they ended, the others (still queued in the producer, where
// the next attempt finds them) and those not produced as retryable.
func (s *Sink) unacked(ctx context.Context, batch []*core.Record, waits []*produced, ok []bool, be *core.BatchError, firstErr, notSent error) error {
	n := 0
	for _, p := range waits {
		if p != nil && !isDone(p) {
			n++
		}
	}
	why := "the write was canceled"
	if ctx.Err() == nil {
		why = fmt.Sprintf("not acknowledged within delivery_timeout %s", s.cfg.DeliveryTimeout)
	}
	if last := s.kgoLog.LastError(); last != "" {
		why += "; last client error: " + last
	}
	uerr := fmt.Errorf("%d of %d records %s (the idempotent producer keeps them queued and retries them in order)", n, len(batch), why)
	if firstErr == nil {
		firstErr = uerr
	}
	for i, p := range waits {
		switch {
		case be.Failed[i] != nil, ok != nil && ok[i]:
		case p == nil:
			be.Fail(i, notSent)
		case !isDone(p):
			be.Fail(i, uerr)
		default:
			s.forget(batch[i])
			if p.err != nil {
				if isPermanent(p.err) {
					be.Fail(i, core.Permanent(fmt.Errorf("kafka refused the record for good: %w", s.redact.Error(p.err))))
				} else {
					be.Fail(i, s.redact.Error(p.err))
				}
			}
		}
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return s.batchErr(batch, be, firstErr)
}

func (s *Sink) batchErr(batch []*core.Record, be *core.BatchError, firstErr error) error {
	if len(be.Failed) == len(batch) && firstErr != nil {
		for _, err := range be.Failed {
			if core.IsPermanent(err) {
				return be
			}
		}
		// Everything failed, nothing for good: one plain error reads
		// better in the log.
		return fmt.Errorf("produce to %s: %w", s.brokers(), firstErr)
	}
	return be.ErrOrNil()
}

func (s *Sink) forget(r *core.Record) {
	s.mu.Lock()
	delete(s.inflight, r)
	s.mu.Unlock()
}

var (
	errNotSent           = errors.New("not produced yet")
	errProducerFull      = errors.New("not produced yet: the producer holds max_buffered_records")
	errWaitingForEarlier = errors.New("not produced yet: records of the batch from an earlier attempt are still in flight")
)

func isDone(p *produced) bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// forgetAbandonedLocked drops finished records the runtime no longer
// retries (it gave up on them at shutdown, or they are in no batch).
func (s *Sink) forgetAbandonedLocked(batch []*core.Record) {
	in := make(map[*core.Record]bool, len(batch))
	for _, r := range batch {
		in[r] = true
	}
	for r, p := range s.inflight {
		if !in[r] && isDone(p) {
			delete(s.inflight, r)
		}
	}
}

func isPermanent(err error) bool {
	return errors.Is(err, kerr.MessageTooLarge) || errors.Is(err, kerr.RecordListTooLarge) ||
		errors.Is(err, kerr.InvalidRecord) || errors.Is(err, kerr.CorruptMessage) ||
		errors.Is(err, kerr.InvalidTopicException)
}

// DryRun prints what would be produced: topic, key, headers, and the value
// (Avro decoded back to JSON).
func (s *Sink) DryRun(_ context.Context, batch []*core.Record, w io.Writer) error {
	for _, r := range batch {
		m, err := s.Message(r)
		if err != nil {
			return err
		}
		var hb strings.Builder
		for i, h := range m.Headers {
			if i > 0 {
				hb.WriteByte(' ')
			}
			fmt.Fprintf(&hb, "%s=%s", h.Key, h.Value)
		}
		value := m.Value
		if r.Encoded != nil {
			js, err := schemas.DecodeToJSON(r.Encoded)
			if err != nil {
				return fmt.Errorf("decode %s value of %s: %w", r.Encoded.Format, r.ID, err)
			}
			value = js
		}
		fmt.Fprintf(w, "topic=%s key=%s headers=[%s] value=%s\n", m.Topic, m.Key, hb.String(), value)
	}
	return nil
}

// Close flushes and closes the client.
func (s *Sink) Close(ctx context.Context) error {
	if s.limit != nil {
		defer s.limit.Flush()
	}
	if s.client == nil {
		return nil
	}
	s.closeTxn(ctx)
	err := s.client.Flush(ctx)
	s.client.Close()
	s.client = nil
	return s.redact.Error(err)
}
