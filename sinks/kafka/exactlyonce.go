package kafka

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fluxstream/fluxstream/core"
)

// Exactly-once: each Write is one Kafka transaction that holds the batch
// and the checkpoint entries it changes (written to a compacted topic,
// keyed per transactional id, source and checkpoint key). A consumer that
// reads read_committed sees a record exactly when the checkpoint that a
// restarted fluxstream loads says it was taken, so a kill at any point
// neither loses nor repeats an event. The memory buffer keeps records
// unacknowledged until their transaction committed.

var _ core.CheckpointKeeper = (*Sink)(nil)

// exactlyOnce is the transactional state of a sink with exactly_once.
type exactlyOnce struct {
	topic  string // the checkpoint topic
	txid   string
	stager core.CheckpointStager
	store  *ckStore
	nonce  string // this process's, in its transaction markers
	seq    uint64
	// cur is the batch transaction not known to be over: failed (its
	// checkpoint writes to restore) or committed without a confirmation.
	cur *txn
	// open says the client may be in a transaction that must be aborted
	// before the next one begins.
	open bool
}

// txn is one transaction's own writes, to settle if it does not commit.
type txn struct {
	puts        []core.KVPut // checkpoint entries drained into it
	unconfirmed bool         // EndTransaction(commit) failed: it may have committed
	offset      int64        // its marker's offset (unconfirmed)
	marker      []byte       // its marker's value
}

// Keys in the checkpoint topic, all under TXID "\x00": "\x00start" (a
// nonce each process commits at start, to know when it has read the
// topic through), "\x00txn" (each transaction's marker), and SOURCE
// "\x00" KEY for the source's checkpoint entries (a nil value deletes).
func (e *exactlyOnce) startKey() string { return e.txid + "\x00\x00start" }
func (e *exactlyOnce) txnKey() string   { return e.txid + "\x00\x00txn" }

// KeepsCheckpoint reports whether exactly_once is on.
func (s *Sink) KeepsCheckpoint() bool { return s.cfg.ExactlyOnce }

// OpenCheckpoint makes the transactional producer (fencing an earlier
// process with the same transactional id and aborting what it left
// open), creates the checkpoint topic if missing, and reads it through,
// read_committed. It waits for unreachable brokers until ctx ends: the
// source cannot start without its position.
func (s *Sink) OpenCheckpoint(ctx context.Context, source string, src core.CheckpointStager, log *slog.Logger) (core.KV, error) {
	s.setup(log)
	if err := s.newClient(); err != nil {
		return nil, err
	}
	e := s.eo
	e.stager = src
	prefix := e.txid + "\x00" + source + "\x00"
	e.store = &ckStore{name: fmt.Sprintf("kafka topic %s, keys of transactional id %q and source %s (exactly_once)", e.topic, e.txid, source),
		prefix: prefix, view: map[string][]byte{}, pending: map[string][]byte{}}
	backoff := 200 * time.Millisecond
	for {
		start := time.Now()
		n, err := s.loadCheckpoint(ctx, prefix)
		if err == nil {
			s.log.Info("exactly-once checkpoint read", "topic", e.topic, "transactional_id", e.txid, "entries", n, "took", time.Since(start).Round(time.Millisecond))
			return e.store, nil
		}
		if fatal := classifyConnectError(err); fatal != nil {
			return nil, s.redact.Error(fmt.Errorf("kafka brokers %s: %w", s.brokers(), fatal))
		}
		var ce *configError
		if errors.As(err, &ce) {
			return nil, err
		}
		s.limit.Log(slog.LevelError, "checkpoint", "cannot read the exactly-once checkpoint from Kafka; the source waits for it",
			"topic", e.topic, "brokers", s.brokers(), "error", s.redact.String(err.Error()))
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("reading the checkpoint topic %s: %w", e.topic, err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
	}
}

// configError is a checkpoint topic that cannot serve (wrong policy).
type configError struct{ msg string }

func (e *configError) Error() string { return e.msg }

// loadCheckpoint reads every entry under prefix into the store.
func (s *Sink) loadCheckpoint(ctx context.Context, prefix string) (int, error) {
	e := s.eo
	if err := s.ensureCheckpointTopic(ctx); err != nil {
		return 0, err
	}
	nonce, err := s.commitMarker(ctx)
	if err != nil {
		return 0, err
	}
	view := map[string][]byte{}
	err = s.scan(ctx, 0, nonce, func(r *kgo.Record) {
		k, ok := strings.CutPrefix(string(r.Key), prefix)
		if !ok {
			return
		}
		if r.Value == nil {
			delete(view, k)
		} else {
			view[k] = r.Value
		}
	})
	if err != nil {
		return 0, err
	}
	e.store.mu.Lock()
	e.store.view = view
	e.store.mu.Unlock()
	return len(view), nil
}

// ensureCheckpointTopic creates the checkpoint topic (one partition,
// compacted) or checks the one there.
func (s *Sink) ensureCheckpointTopic(ctx context.Context) error {
	topic := s.eo.topic
	adm := kadm.NewClient(s.client)
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout+10*time.Second)
	defer cancel()
	md, err := adm.Metadata(ctx, topic)
	if err != nil {
		return err
	}
	td, ok := md.Topics[topic]
	if !ok || errors.Is(td.Err, kerr.UnknownTopicOrPartition) {
		compact := "compact"
		resp, err := adm.CreateTopic(ctx, 1, -1, map[string]*string{"cleanup.policy": &compact}, topic)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create checkpoint topic %s: %w", topic, err)
		}
		if err == nil {
			s.log.Info("checkpoint topic created (compacted, one partition)", "topic", topic)
		}
		return nil
	}
	if td.Err != nil {
		return fmt.Errorf("checkpoint topic %s: %w", topic, td.Err)
	}
	if len(td.Partitions) != 1 {
		return &configError{fmt.Sprintf("checkpoint topic %s has %d partitions; it needs exactly one (delete it while nothing runs, or name another in checkpoint_topic)", topic, len(td.Partitions))}
	}
	rcs, err := adm.DescribeTopicConfigs(ctx, topic)
	if err != nil {
		return err
	}
	rc, err := rcs.On(topic, nil)
	if err != nil {
		return err
	}
	for _, c := range rc.Configs {
		if c.Key == "cleanup.policy" && !strings.Contains(c.MaybeValue(), "compact") {
			return &configError{fmt.Sprintf("checkpoint topic %s has cleanup.policy=%s: its entries would expire and every event come again; set cleanup.policy=compact", topic, c.MaybeValue())}
		}
	}
	return nil
}

// commitMarker commits a transaction holding only a fresh start marker
// and returns its nonce and offset. Its first one also fences a process
// that had the transactional id before (its open transaction aborts).
func (s *Sink) commitMarker(ctx context.Context) (string, error) {
	if err := s.abortOpen(ctx); err != nil {
		return "", err
	}
	var b [12]byte
	rand.Read(b[:])
	nonce := hex.EncodeToString(b[:])
	if err := s.client.BeginTransaction(); err != nil {
		return "", s.txnError("begin transaction", err)
	}
	s.eo.open = true
	pctx, cancel := context.WithTimeout(ctx, s.cfg.DeliveryTimeout)
	err := s.client.ProduceSync(pctx, &kgo.Record{Topic: s.eo.topic, Key: []byte(s.eo.startKey()), Value: []byte(nonce)}).FirstErr()
	cancel()
	if err == nil {
		err = s.endTxn(ctx, kgo.TryCommit)
	}
	if err != nil {
		return "", err // aborted before the next transaction
	}
	s.eo.open = false
	return nonce, nil
}

// abortOpen aborts the transaction the client may still be in.
func (s *Sink) abortOpen(ctx context.Context) error {
	if !s.eo.open {
		return nil
	}
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.DeliveryTimeout+produceRequestTimeout)
	defer cancel()
	// Records still in the producer must be answered (or failed) before
	// the abort, or they could join the next transaction.
	if err := s.client.AbortBufferedRecords(actx); err != nil {
		return fmt.Errorf("abort the failed transaction: %w", err)
	}
	if err := s.client.EndTransaction(actx, kgo.TryAbort); err != nil {
		return fmt.Errorf("abort the failed transaction: %w", err)
	}
	s.eo.open = false
	return nil
}

// endTxn ends the open transaction. The context is not the caller's: a
// canceled EndTxn request leaves its outcome unknown.
func (s *Sink) endTxn(ctx context.Context, how kgo.TransactionEndTry) error {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.DeliveryTimeout+produceRequestTimeout)
	defer cancel()
	return s.client.EndTransaction(ctx, how)
}

// scan reads the checkpoint topic from offset from, read_committed,
// passing each record to fn, until the start marker holding nonce.
func (s *Sink) scan(ctx context.Context, from int64, nonce string, fn func(*kgo.Record)) error {
	opts, err := s.cfg.Options()
	if err != nil {
		return err
	}
	opts = append(opts, kgo.WithLogger(s.kgoLog),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{s.eo.topic: {0: kgo.NewOffset().At(from)}}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()))
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	start := []byte(s.eo.startKey())
	for {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("read checkpoint topic %s: %w", s.eo.topic, err)
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = err })
		if ferr != nil && !kerr.IsRetriable(ferr) {
			return fmt.Errorf("read checkpoint topic %s: %w", s.eo.topic, ferr)
		}
		done := false
		fs.EachRecord(func(r *kgo.Record) {
			if done {
				return
			}
			if bytes.Equal(r.Key, start) && string(r.Value) == nonce {
				done = true
				return
			}
			fn(r)
		})
		if done {
			return nil
		}
	}
}

// settle ends the transaction a failure left open. It reports whether
// that transaction committed after all (the batch it carried is in
// Kafka). On an error the transaction stays to settle on the next try.
func (s *Sink) settle(ctx context.Context) (committed bool, err error) {
	if err := s.abortOpen(ctx); err != nil {
		return false, err
	}
	t := s.eo.cur
	if t == nil {
		return false, nil
	}
	if t.unconfirmed {
		// The abort fenced it if it was still open; whether it had
		// committed shows in the topic: its marker is there or not.
		nonce, err := s.commitMarker(ctx)
		if err != nil {
			return false, fmt.Errorf("learn whether the unconfirmed transaction committed: %w", err)
		}
		key := []byte(s.eo.txnKey())
		err = s.scan(ctx, t.offset, nonce, func(r *kgo.Record) {
			if r.Offset == t.offset && bytes.Equal(r.Key, key) && bytes.Equal(r.Value, t.marker) {
				committed = true
			}
		})
		if err != nil {
			return false, fmt.Errorf("learn whether the unconfirmed transaction committed: %w", err)
		}
		s.log.Warn("a transaction commit was not confirmed; read back from the checkpoint topic", "committed", committed)
	}
	s.eo.cur = nil
	if !committed {
		s.eo.store.restore(t.puts)
	}
	return committed, nil
}

var errTxnNotTried = errors.New("not produced: another record of the batch was refused; the rest goes again in a new transaction")

// writeTxn is Write with exactly_once: the batch and the checkpoint in
// one transaction, all or nothing. Any failure aborts it; the runtime
// retries the batch in a new one.
func (s *Sink) writeTxn(ctx context.Context, batch []*core.Record) error {
	e := s.eo
	if e.store == nil {
		return errors.New("exactly_once: no checkpoint store (the sink's source was not provisioned through it)")
	}
	if e.cur != nil || e.open {
		committed, err := s.settle(ctx)
		if err != nil {
			return s.redact.Error(err)
		}
		if committed {
			return nil // the runtime retried the very batch that was in it
		}
	}
	msgs := make([]*kgo.Record, len(batch))
	var be core.BatchError
	for i, r := range batch {
		m, err := s.Message(r)
		if err != nil {
			be.Fail(i, core.Permanent(err))
			continue
		}
		msgs[i] = m
	}
	if len(be.Failed) > 0 {
		for i := range batch {
			if be.Failed[i] == nil {
				be.Fail(i, errTxnNotTried)
			}
		}
		return &be
	}

	if err := s.client.BeginTransaction(); err != nil {
		return s.txnError("begin transaction", err)
	}
	e.open = true
	t := &txn{}
	e.cur = t
	errs := make([]error, len(batch))
	var wg sync.WaitGroup
	for i, m := range msgs {
		wg.Add(1)
		s.client.Produce(ctx, m, func(_ *kgo.Record, err error) {
			errs[i] = err
			wg.Done()
		})
	}
	if err := e.stager.StageCheckpoint(batch); err != nil {
		return s.abortAfter(ctx, fmt.Errorf("stage the checkpoint: %w", err))
	}
	t.puts = e.store.drain()
	var ckErr error
	var ckMu sync.Mutex
	ckFail := func(_ *kgo.Record, err error) {
		if err != nil {
			ckMu.Lock()
			ckErr = fmt.Errorf("checkpoint topic %s: %w", e.topic, err)
			ckMu.Unlock()
		}
	}
	for _, p := range t.puts {
		wg.Add(1)
		s.client.Produce(ctx, &kgo.Record{Topic: e.topic, Key: []byte(e.store.prefix + string(p.Key)), Value: p.Value},
			func(r *kgo.Record, err error) { ckFail(r, err); wg.Done() })
	}
	e.seq++
	t.marker = []byte(e.nonce + ":" + strconv.FormatUint(e.seq, 10))
	t.offset = -1
	wg.Add(1)
	s.client.Produce(ctx, &kgo.Record{Topic: e.topic, Key: []byte(e.txnKey()), Value: t.marker}, func(r *kgo.Record, err error) {
		ckFail(r, err)
		if err == nil {
			t.offset = r.Offset
		}
		wg.Done()
	})

	fctx, cancel := context.WithTimeout(ctx, s.cfg.DeliveryTimeout)
	err := s.client.Flush(fctx)
	cancel()
	if err != nil {
		why := "canceled"
		if ctx.Err() == nil {
			why = fmt.Sprintf("not acknowledged within delivery_timeout %s", s.cfg.DeliveryTimeout)
		}
		if last := s.kgoLog.LastError(); last != "" {
			why += "; last client error: " + last
		}
		return s.abortAfter(ctx, fmt.Errorf("transaction of %d records %s; aborted, the batch goes again in a new one", len(batch), why))
	}
	wg.Wait()
	ckMu.Lock()
	defer ckMu.Unlock()
	var permanent bool
	var firstErr error
	for i, err := range errs {
		if err == nil {
			continue
		}
		if firstErr == nil {
			firstErr = err
		}
		if isPermanent(err) {
			permanent = true
			be.Fail(i, core.Permanent(fmt.Errorf("kafka refused the record for good: %w", s.redact.Error(err))))
		}
	}
	if firstErr == nil {
		firstErr = ckErr
	}
	if firstErr != nil {
		aerr := s.abortAfter(ctx, fmt.Errorf("produce: %w; transaction aborted", firstErr))
		if !permanent {
			return aerr
		}
		for i := range batch {
			if be.Failed[i] == nil {
				be.Fail(i, errTxnNotTried)
			}
		}
		return &be
	}
	if err := s.endTxn(ctx, kgo.TryCommit); err != nil {
		t.unconfirmed = t.offset >= 0
		committed, serr := s.settle(ctx)
		switch {
		case serr != nil:
			return s.redact.Error(fmt.Errorf("commit: %w; and then: %v", err, serr))
		case committed:
			return nil
		}
		return s.txnError("commit", err)
	}
	e.open, e.cur = false, nil
	return nil
}

// abortAfter aborts the open transaction after err and returns err.
func (s *Sink) abortAfter(ctx context.Context, err error) error {
	if _, serr := s.settle(ctx); serr != nil {
		err = fmt.Errorf("%w; %v (retried before the next transaction)", err, serr)
	}
	return s.redact.Error(err)
}

// txnError explains a transaction error; a fenced producer means another
// process took over the transactional id.
func (s *Sink) txnError(what string, err error) error {
	if errors.Is(err, kerr.ProducerFenced) || errors.Is(err, kerr.InvalidProducerEpoch) || errors.Is(err, kerr.TransactionalIDAuthorizationFailed) {
		return s.redact.Error(fmt.Errorf("%s: %w (is another fluxstream running with transactional_id %q? only one may)", what, err, s.eo.txid))
	}
	return s.redact.Error(fmt.Errorf("%s: %w", what, err))
}

// closeTxn aborts a transaction left open at shutdown, so read_committed
// consumers are not held up until it times out.
func (s *Sink) closeTxn(ctx context.Context) {
	if s.eo != nil && (s.eo.cur != nil || s.eo.open) {
		if _, err := s.settle(ctx); err != nil {
			s.log.Warn("could not abort the open transaction at shutdown; it aborts when fluxstream starts again or after transaction_timeout", "error", s.redact.String(err.Error()))
		}
	}
}

// ckStore is the source's checkpoint as its KV: what the topic held at
// start plus what was committed since (view), and the writes not yet in
// a transaction (pending; a nil value deletes).
type ckStore struct {
	name    string
	prefix  string // of the Kafka keys
	mu      sync.Mutex
	view    map[string][]byte
	pending map[string][]byte
}

var _ core.KV = (*ckStore)(nil)

func (c *ckStore) String() string { return c.name }

func (c *ckStore) Get(key []byte) ([]byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.view[string(key)]), nil
}

func (c *ckStore) ForEach(fn func(k, v []byte) error) error {
	c.mu.Lock()
	keys := make([]string, 0, len(c.view))
	for k := range c.view {
		keys = append(keys, k)
	}
	vals := make(map[string][]byte, len(c.view))
	for k, v := range c.view {
		vals[k] = v // values are replaced, never written into
	}
	c.mu.Unlock()
	sort.Strings(keys)
	for _, k := range keys {
		if err := fn([]byte(k), vals[k]); err != nil {
			return err
		}
	}
	return nil
}

// Commit stages puts for the next transaction.
func (c *ckStore) Commit(puts []core.KVPut) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range puts {
		k := string(p.Key)
		if p.Value == nil {
			delete(c.view, k)
			c.pending[k] = nil
			continue
		}
		v := bytes.Clone(p.Value)
		c.view[k] = v
		c.pending[k] = v
	}
	return nil
}

// drain takes the pending writes, in key order.
func (c *ckStore) drain() []core.KVPut {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]core.KVPut, 0, len(c.pending))
	for k, v := range c.pending {
		out = append(out, core.KVPut{Key: []byte(k), Value: v})
	}
	clear(c.pending)
	sort.Slice(out, func(i, j int) bool { return bytes.Compare(out[i].Key, out[j].Key) < 0 })
	return out
}

// restore puts back the writes of a transaction that did not commit,
// unless newer ones for the same keys came meanwhile.
func (c *ckStore) restore(puts []core.KVPut) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, p := range puts {
		if _, newer := c.pending[string(p.Key)]; !newer {
			c.pending[string(p.Key)] = p.Value
		}
	}
}

// newExactlyOnce checks what exactly_once needs of the node and derives
// the transactional id and the checkpoint topic.
func newExactlyOnce(nc *core.NodeConfig, c *Config) (*exactlyOnce, error) {
	var errs core.ConfigErrors // the buffer rules are core's (checkKeepers)
	cluster := nc.Global().Cluster
	txid := c.TransactionalID
	if txid == "" {
		if cluster == "" {
			errs = append(errs, nc.Errorf("transactional_id", "exactly_once needs a transactional_id, or a top-level cluster: to derive it from (fluxstream-CLUSTER-NODE)"))
		}
		txid = "fluxstream-" + cluster + "-" + nc.Name
	}
	if strings.ContainsRune(txid, 0) {
		errs = append(errs, nc.Errorf("transactional_id", "must not hold a NUL byte"))
	}
	topic := c.CheckpointTopic
	if topic == "" {
		topic = templateRe.ReplaceAllStringFunc(c.Topic, func(m string) string {
			if templateRe.FindStringSubmatch(m)[1] == "cluster" && cluster != "" {
				return sanitizeTopic(cluster)
			}
			return m
		})
		if cluster == "" || templateRe.MatchString(topic) {
			errs = append(errs, nc.Errorf("checkpoint_topic", "exactly_once with a topic template needs checkpoint_topic (one fixed topic) or a top-level cluster: for {{cluster}}"))
		}
		topic += ".fluxstream-checkpoint"
	}
	if len(errs) > 0 {
		return nil, errs
	}
	var b [8]byte
	rand.Read(b[:])
	return &exactlyOnce{topic: topic, txid: txid, nonce: hex.EncodeToString(b[:])}, nil
}
