package elasticsearch

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/elastic/go-elasticsearch/v8/esapi"

	"github.com/fluxstream/fluxstream/core"
)

type itemKind uint8

const (
	kindEvent itemKind = iota // create in the events index
	kindJob                   // index, external version, in the jobs index
	kindPurge                 // scripted update (upsert) of the job document
)

type itemState uint8

const (
	statePending itemState = iota
	stateOK
	stateRetry // failed, may succeed later
	statePerm  // refused for good
)

// item is one action of a bulk request.
type item struct {
	rec   int // index of its record in the batch
	kind  itemKind
	key   string // job document id (jobs and purges), for ordering
	index string
	purge *core.Record // kindPurge: meta and body are made by prepurge
	meta  []byte       // action line, with its newline
	body  []byte       // source line, with its newline
	state itemState
	err   error
}

func (it *item) size() int { return len(it.meta) + len(it.body) }

func actionLine(action, index, id string, extra map[string]any) []byte {
	a := map[string]any{"_index": index, "_id": id}
	for k, v := range extra {
		a[k] = v
	}
	b, _ := json.Marshal(map[string]any{action: a})
	return append(b, '\n')
}

// items turns a batch into bulk actions. Records that cannot become a
// document at all are reported in errs (permanent).
func (s *Sink) items(batch []*core.Record) ([]*item, map[int]error) {
	c := &s.cfg
	var items []*item
	errs := map[int]error{}
	fail := func(i int, err error) { errs[i] = core.Permanent(err) }
	for i, r := range batch {
		n := 0
		if c.eventsOn() && (r.Kind == core.KindEvent || c.Profile == "native") {
			body, err := c.eventDoc(r)
			switch {
			case errors.Is(err, errNoDoc):
			case err != nil:
				fail(i, fmt.Errorf("record %s: no document: %w", r.ID, err))
				continue
			default:
				ts := r.Time()
				if ts <= 0 { // invalid input has no time of its own
					ts = float64(s.now().UnixNano()) / 1e9
				}
				index := formatIndex(c.Events.Index, ts)
				items = append(items, &item{rec: i, kind: kindEvent, index: index,
					meta: actionLine("create", index, r.ID, nil),
					body: append(body, '\n')})
				n++
			}
		}
		if c.jobsOn() {
			switch {
			case r.Kind == core.KindEvent && r.Job != nil && r.Event != nil:
				body, err := c.jobDoc(r)
				if err != nil {
					fail(i, fmt.Errorf("record %s: no job document: %w", r.ID, err))
					continue
				}
				key := jobKeyOf(r)
				items = append(items, &item{rec: i, kind: kindJob, key: key, index: c.Jobs.Index,
					meta: actionLine("index", c.Jobs.Index, key, map[string]any{
						"version": Version(r.Event.Timestamp), "version_type": "external"}),
					body: append(body, '\n')})
				n++
			case r.Kind == core.KindPurge && r.Purge != nil:
				// Built when it is sent (prepurge): it needs the stored
				// document.
				items = append(items, &item{rec: i, kind: kindPurge, key: jobKeyOf(r), index: c.Jobs.Index, purge: r})
				n++
			}
		}
		if n == 0 {
			if r.Kind == core.KindInvalid {
				// Never dropped silently: only the native events index
				// has a place for input that could not be decoded.
				fail(i, fmt.Errorf("invalid input (%s) has no document in profile %s without the events index; kept in the dead-letter file", r.Invalid.Error, c.Profile))
			}
			// A purge with no jobs index, or an event record without a
			// job, has nothing to say here: delivered.
		}
	}
	return items, errs
}

// Write delivers a batch with bulk requests, up to in_flight at once, and
// reports per record: a record is delivered once every action of it is
// (a 409 on create or on an external version counts: the document, or a
// newer one, is there). 429, 5xx and rejected-execution items are retried
// here with backoff, then handed back to the runtime; document errors are
// permanent (dead-letter file, with the reason); a 413 splits the request.
func (s *Sink) Write(ctx context.Context, batch []*core.Record) error {
	if err := s.ensureReady(ctx); err != nil {
		s.limit.Log(slog.LevelWarn, "prepare", "elasticsearch not ready (templates); the batch waits", "error", s.redact.String(err.Error()))
		return s.redact.Error(fmt.Errorf("elasticsearch %s: %w", s.addresses(), err))
	}
	items, berrs := s.items(batch)
	s.linger(ctx, len(batch), items)
	defer func() {
		s.mu.Lock()
		s.lastWrite = s.now()
		s.mu.Unlock()
	}()

	backoff := s.cfg.BulkRetry.InitialBackoff
	for failures := 0; ; {
		send := s.eligible(items)
		if len(send) == 0 {
			break
		}
		s.sendAll(ctx, send)
		retry := 0
		for _, it := range send {
			if it.state == stateRetry {
				retry++
			}
		}
		if retry == 0 {
			continue // only items blocked behind others are left: go on at once
		}
		failures++
		if failures >= s.cfg.BulkRetry.Attempts || ctx.Err() != nil {
			break
		}
		jitter := time.Duration(rand.Int64N(int64(backoff)/2 + 1))
		if !sleepCtx(ctx, backoff+jitter) {
			break
		}
		backoff = min(2*backoff, s.cfg.BulkRetry.MaxBackoff)
		for _, it := range items {
			if it.state == stateRetry {
				it.state = statePending
			}
		}
	}

	// Per record: any action not through -> retry the record; else any
	// refused for good -> dead-letter it.
	be := &core.BatchError{}
	for i, err := range berrs {
		be.Fail(i, err)
	}
	perm := map[int]error{}
	for _, it := range items {
		switch it.state {
		case stateOK:
		case statePerm:
			if _, ok := perm[it.rec]; !ok {
				perm[it.rec] = it.err
			}
		default:
			err := it.err
			if err == nil {
				err = errors.New("not sent: an earlier action on the same job document has not gone through")
			}
			be.Fail(it.rec, err)
		}
	}
	for i, err := range perm {
		if _, failed := be.Failed[i]; !failed {
			be.Fail(i, core.Permanent(err))
		}
	}
	if err := be.ErrOrNil(); err != nil {
		s.limit.Log(slog.LevelWarn, "items", "some records of the batch did not go through", "error", s.redact.String(err.Error()))
		return err
	}
	return nil
}

// linger waits out flush.interval after the previous write when this
// batch is not full, so a trickle of records goes in fewer, bigger bulk
// requests (the runtime hands the next write what arrived meanwhile).
func (s *Sink) linger(ctx context.Context, n int, items []*item) {
	if s.cfg.Flush.Interval <= 0 || n >= s.cfg.Flush.MaxRecords {
		return
	}
	size := 0
	for _, it := range items {
		size += it.size()
	}
	if size >= int(s.cfg.Flush.MaxBytes) {
		return
	}
	s.mu.Lock()
	wait := s.cfg.Flush.Interval - s.now().Sub(s.lastWrite)
	s.mu.Unlock()
	if wait > 0 {
		sleepCtx(ctx, wait)
	}
}

// eligible picks the pending items that may go now. Job snapshots commute
// (the external version orders them), but a purge reads what the stored
// document holds: it goes only once every earlier action on the same job
// document is through (or refused), and an action after a purge waits for
// the purge.
func (s *Sink) eligible(items []*item) []*item {
	type seen struct{ unfinished, purge bool }
	keys := map[string]*seen{}
	var out []*item
	for _, it := range items {
		var k *seen
		if it.key != "" {
			k = keys[it.key]
			if k == nil {
				k = &seen{}
				keys[it.key] = k
			}
		}
		unfinished := it.state == statePending || it.state == stateRetry
		if it.state == statePending {
			blocked := k != nil && (k.purge || (it.kind == kindPurge && k.unfinished))
			if !blocked {
				out = append(out, it)
			}
		}
		if k != nil && unfinished {
			k.unfinished = true
			if it.kind == kindPurge {
				k.purge = true
			}
		}
	}
	return out
}

// sendAll sends items in bulk requests of at most flush.max_records
// actions and flush.max_bytes, in_flight at a time, and sets every item's
// state.
func (s *Sink) sendAll(ctx context.Context, items []*item) {
	items = s.prepurge(ctx, items)
	var chunks [][]*item
	var cur []*item
	size := 0
	for _, it := range items {
		if len(cur) > 0 && (len(cur) >= s.cfg.Flush.MaxRecords || size+it.size() > int(s.cfg.Flush.MaxBytes)) {
			chunks = append(chunks, cur)
			cur, size = nil, 0
		}
		cur = append(cur, it)
		size += it.size()
	}
	if len(cur) > 0 {
		chunks = append(chunks, cur)
	}
	sem := make(chan struct{}, s.cfg.InFlight)
	var wg sync.WaitGroup
	for _, ch := range chunks {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			s.bulk(ctx, ch)
		}()
	}
	wg.Wait()
}

// errDetail is an error object of Elasticsearch.
type errDetail struct {
	Type     string     `json:"type"`
	Reason   string     `json:"reason"`
	CausedBy *errDetail `json:"caused_by"`
}

func (e *errDetail) String() string {
	if e == nil {
		return ""
	}
	s := e.Type + ": " + e.Reason
	if e.CausedBy != nil && e.CausedBy.Type != "" {
		s += " (caused by " + e.CausedBy.String() + ")"
	}
	return s
}

type bulkResponse struct {
	Errors bool                          `json:"errors"`
	Items  []map[string]bulkItemResponse `json:"items"`
}

type bulkItemResponse struct {
	Status int        `json:"status"`
	Error  *errDetail `json:"error"`
}

// ItemError is why one action failed.
type ItemError struct {
	Status int
	Action string
	Index  string
	Detail string
}

func (e *ItemError) Error() string {
	return fmt.Sprintf("%s %s: %d %s", e.Action, e.Index, e.Status, e.Detail)
}

// retryableType lists error types worth retrying whatever their status.
var retryableType = map[string]bool{
	"es_rejected_execution_exception":         true,
	"circuit_breaking_exception":              true,
	"cluster_block_exception":                 true, // e.g. flood-stage disk watermark
	"unavailable_shards_exception":            true,
	"no_shard_available_action_exception":     true,
	"process_cluster_event_timeout_exception": true,
	"timeout_exception":                       true,
}

// classify sets the state of an item from its response.
func classify(it *item, r bulkItemResponse) {
	switch {
	case r.Status >= 200 && r.Status < 300:
		it.state = stateOK
		return
	case r.Status == http.StatusConflict && (it.kind == kindEvent || it.kind == kindJob):
		// create: the document is there; external version: a newer one is.
		it.state = stateOK
		return
	}
	typ := ""
	detail := strconv.Itoa(r.Status)
	if r.Error != nil {
		typ = r.Error.Type
		detail = r.Error.String()
	}
	it.err = &ItemError{Status: r.Status, Action: actionOf(it.kind), Index: it.index, Detail: detail}
	if r.Status == http.StatusTooManyRequests || r.Status >= 500 || retryableType[typ] || r.Status == http.StatusConflict {
		// 409 here is a purge whose update lost every retry_on_conflict.
		it.state = stateRetry
		return
	}
	it.state = statePerm
}

func actionOf(k itemKind) string {
	switch k {
	case kindJob:
		return "index"
	case kindPurge:
		return "update"
	}
	return "create"
}

// bulk sends one bulk request. A 413 (or a 400 for the whole request)
// splits it in halves; a single action refused so is refused for good.
func (s *Sink) bulk(ctx context.Context, items []*item) {
	var buf bytes.Buffer
	for _, it := range items {
		buf.Write(it.meta)
		buf.Write(it.body)
	}
	rctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	res, err := esapi.BulkRequest{
		Body:       bytes.NewReader(buf.Bytes()),
		FilterPath: []string{"errors", "items.*.status", "items.*.error"},
	}.Do(rctx, s.tp)
	if err != nil {
		setAll(items, stateRetry, fmt.Errorf("bulk request: %w", err))
		s.limit.Log(slog.LevelWarn, "request", "bulk request failed; retrying", "error", s.redact.String(err.Error()), "actions", len(items))
		return
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		setAll(items, stateRetry, fmt.Errorf("bulk response: %w", err))
		return
	}
	switch st := res.StatusCode; {
	case st == http.StatusRequestEntityTooLarge || st == http.StatusBadRequest:
		if len(items) == 1 {
			what := "refused"
			if st == http.StatusRequestEntityTooLarge {
				what = "too large for the server (http.max_content_length)"
			}
			setAll(items, statePerm, fmt.Errorf("%s: %d %s", what, st, reason(body)))
			return
		}
		half := len(items) / 2
		s.limit.Log(slog.LevelInfo, "split", "bulk request refused as a whole; splitting it", "status", st, "actions", len(items))
		s.bulk(ctx, items[:half])
		s.bulk(ctx, items[half:])
		return
	case st >= 300:
		setAll(items, stateRetry, fmt.Errorf("bulk request: %s %s", res.Status(), reason(body)))
		s.limit.Log(slog.LevelWarn, "status", "bulk request refused; retrying", "status", st, "error", reason(body))
		return
	}
	var br bulkResponse
	if err := json.Unmarshal(body, &br); err != nil || len(br.Items) != len(items) {
		setAll(items, stateRetry, fmt.Errorf("bulk response with %d items for %d actions (%v)", len(br.Items), len(items), err))
		return
	}
	for i, m := range br.Items {
		for _, r := range m { // one key: the action
			classify(items[i], r)
		}
	}
}

func setAll(items []*item, st itemState, err error) {
	for _, it := range items {
		it.state, it.err = st, err
	}
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

// prepurge makes the actions of the purges among items: the stored job
// document (one _mget for all) with purged, purged_at and purge_reason
// added, indexed with version_type=external at its stored version + 1.
// That is a compare-and-set: it succeeds only if nothing wrote the document
// since the read (versions only grow), else it gets a 409 and is read and
// tried again; stale snapshots (lower versions) stay refused after it.
// A job with no document gets a stub at the purge time as its version.
// An already purged document needs nothing. Items that need no action, or
// whose read failed, are set and left out of the returned list.
//
// Not a scripted update: painless rewrites the whole _source from its
// parsed form, and Java prints the doubles of Flux times as
// 1.7953945001448E9, which an epoch_second date field refuses.
func (s *Sink) prepurge(ctx context.Context, items []*item) []*item {
	var ids []string
	for _, it := range items {
		if it.kind == kindPurge {
			ids = append(ids, it.key)
		}
	}
	if len(ids) == 0 {
		return items
	}
	docs, err := s.mget(ctx, s.cfg.Jobs.Index, ids)
	out := items[:0:0]
	for _, it := range items {
		if it.kind != kindPurge {
			out = append(out, it)
			continue
		}
		if err != nil {
			it.state, it.err = stateRetry, fmt.Errorf("reading job document %s before its purge: %w", it.key, err)
			continue
		}
		r := it.purge
		at := r.Purge.Time
		if at <= 0 {
			at = float64(s.now().UnixNano()) / 1e9
		}
		d := docs[it.key]
		switch {
		case d == nil || !d.Found:
			body, err := s.cfg.purgeStub(r, at)
			if err != nil {
				it.state, it.err = statePerm, err
				continue
			}
			it.meta = actionLine("index", it.index, it.key, map[string]any{"version": Version(at), "version_type": "external"})
			it.body = append(body, '\n')
		case d.purged():
			it.state, it.err = stateOK, nil
			continue
		default:
			it.meta = actionLine("index", it.index, it.key, map[string]any{"version": d.Version + 1, "version_type": "external"})
			it.body = append(spliceFront(purgeFields(r, at), d.Source), '\n')
		}
		out = append(out, it)
	}
	return out
}

type storedDoc struct {
	ID      string          `json:"_id"`
	Found   bool            `json:"found"`
	Version int64           `json:"_version"`
	Source  json.RawMessage `json:"_source"`
}

func (d *storedDoc) purged() bool {
	var p struct {
		Purged bool `json:"purged"`
	}
	json.Unmarshal(d.Source, &p)
	return p.Purged
}

// mget reads documents by id.
func (s *Sink) mget(ctx context.Context, index string, ids []string) (map[string]*storedDoc, error) {
	body, _ := json.Marshal(map[string]any{"ids": ids})
	rctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	res, err := esapi.MgetRequest{Index: index, Body: bytes.NewReader(body)}.Do(rctx, s.tp)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	rb, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, err
	}
	if res.StatusCode == http.StatusNotFound {
		return map[string]*storedDoc{}, nil // no index yet
	}
	if res.StatusCode >= 300 {
		return nil, fmt.Errorf("_mget: %s %s", res.Status(), reason(rb))
	}
	var mr struct {
		Docs []*storedDoc `json:"docs"`
	}
	if err := json.Unmarshal(rb, &mr); err != nil {
		return nil, err
	}
	out := map[string]*storedDoc{}
	for _, d := range mr.Docs {
		out[d.ID] = d
	}
	return out, nil
}
