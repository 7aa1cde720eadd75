package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/core/coretest"
	"github.com/fluxstream/fluxstream/internal/estest"
	"github.com/fluxstream/fluxstream/sinks/elasticsearch"
	"github.com/fluxstream/fluxstream/sources/replay"
)

// bulkHold is the transport of a loopback proxy between fluxstream and
// the test node. It passes everything through, except that once armed it
// holds the next _bulk request: before the node sees it, or after the
// node applied it but before its answer goes back. The held request ends
// only when fluxstream's connection goes away (the kill).
type bulkHold struct {
	mu    sync.Mutex
	bulks int  // _bulk requests seen
	armAt int  // hold the first bulk numbered >= armAt (0: none)
	after bool // hold after the node applied it
	held  chan string
	quit  chan struct{} // closed at the end: nothing is held any more
}

func (h *bulkHold) arm(at int, after bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.armAt, h.after = at, after
}

func (h *bulkHold) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.bulks
}

func (h *bulkHold) RoundTrip(req *http.Request) (*http.Response, error) {
	if !strings.HasSuffix(req.URL.Path, "/_bulk") {
		return http.DefaultTransport.RoundTrip(req)
	}
	h.mu.Lock()
	h.bulks++
	n := h.bulks
	hold := h.armAt > 0 && n >= h.armAt
	after := h.after
	if hold {
		h.armAt = 0
	}
	h.mu.Unlock()
	if !hold {
		return http.DefaultTransport.RoundTrip(req)
	}
	ctx := req.Context()
	if after {
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			return nil, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	what := fmt.Sprintf("bulk #%d held before the node saw it", n)
	if after {
		what = fmt.Sprintf("bulk #%d held after the node applied it", n)
	}
	select {
	case h.held <- what:
	case <-ctx.Done():
	case <-h.quit:
	}
	select {
	case <-ctx.Done():
	case <-h.quit:
	}
	return nil, context.Canceled
}

// esProc is one fluxstream process of the test.
type esProc struct {
	cmd  *exec.Cmd
	log  *coretest.SyncBuffer
	done chan struct{} // closed when it exited
}

func startES(t *testing.T, dir, config string) *esProc {
	t.Helper()
	cmd := fluxstreamCmd(t, dir, "run", "-c", config)
	p := &esProc{cmd: cmd, log: &coretest.SyncBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// bulkRecords is what the replay source emits for the bulk fixture.
func bulkRecords(t *testing.T, path string) []*core.Record {
	t.Helper()
	nc, err := core.ParseNodeConfig(core.KindSource, "journal", []byte("path: "+path+"\nuser_lookup: none\ncluster: test\ncheckpoint: false\n"))
	if err != nil {
		t.Fatal(err)
	}
	src, err := replay.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	if p, ok := src.(core.Provisioner); ok {
		if err := p.Provision(context.Background(), core.NodeContext{Name: "journal", Logger: quiet}); err != nil {
			t.Fatal(err)
		}
	}
	if c, ok := src.(io.Closer); ok {
		defer c.Close()
	}
	c := &recCollector{}
	if err := src.Run(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	return c.recs
}

type recCollector struct {
	mu   sync.Mutex
	recs []*core.Record
}

func (c *recCollector) Emit(_ context.Context, recs []*core.Record, ack func()) error {
	c.mu.Lock()
	c.recs = append(c.recs, recs...)
	c.mu.Unlock()
	ack()
	return nil
}

// mgetDoc is one answer of mgetDocs.
type mgetDoc struct {
	ID      string `json:"_id"`
	Found   bool   `json:"found"`
	Version int64  `json:"_version"`
	Source  struct {
		Job struct {
			State string `json:"state"`
		} `json:"job"`
	} `json:"_source"`
}

// mgetDocs fetches ids from index in chunks: id -> found, version,
// job.state.
func mgetDocs(t *testing.T, node *estest.Node, index string, ids []string) map[string]mgetDoc {
	t.Helper()
	out := map[string]mgetDoc{}
	q := "?_source_includes=job.state"
	for i := 0; i < len(ids); i += 2000 {
		var res struct {
			Docs []mgetDoc `json:"docs"`
		}
		body := map[string]any{"ids": ids[i:min(i+2000, len(ids))]}
		if err := node.Do(context.Background(), "POST", "/"+index+"/_mget"+q, body, &res); err != nil {
			t.Fatalf("mget %s: %v", index, err)
		}
		for _, d := range res.Docs {
			out[d.ID] = d
		}
	}
	return out
}

// eventHits searches the indices matching pattern for ids: id -> number
// of documents.
func eventHits(t *testing.T, node *estest.Node, pattern string, ids []string) map[string]int {
	t.Helper()
	out := map[string]int{}
	for i := 0; i < len(ids); i += 2000 {
		chunk := ids[i:min(i+2000, len(ids))]
		var res struct {
			Hits struct {
				Hits []struct {
					ID string `json:"_id"`
				} `json:"hits"`
			} `json:"hits"`
		}
		body := map[string]any{"size": 2 * len(chunk), "_source": false, "query": map[string]any{"ids": map[string]any{"values": chunk}}}
		if err := node.Do(context.Background(), "POST", "/"+pattern+"/_search?expand_wildcards=all", body, &res); err != nil {
			t.Fatalf("search %s: %v", pattern, err)
		}
		for _, h := range res.Hits.Hits {
			out[h.ID]++
		}
	}
	return out
}

// fluxstream replays the bulk fixture into Elasticsearch (the OpenSearch
// test node) and is killed with SIGKILL several times while bulk requests
// are in flight: each kill comes while a proxy holds one bulk request,
// either before the node saw it or after the node applied it but before
// fluxstream had the answer, with other bulks in flight around it. It is
// restarted until the replay is done and the spool drained (exit 0).
// Then the events index holds exactly one document per event of the
// journal (a redelivered create is a 409), and the jobs index exactly one
// per job, in its final state (INACTIVE) at the final snapshot's version
// (a redelivered older snapshot is refused by the external version).
func TestKill9MidBulkElasticsearch(t *testing.T) {
	node := estest.Start(t)
	// main_test.go's TestMain does not release the shared node: drop our
	// lease when the test ends (the last user out stops it).
	t.Cleanup(estest.Release)
	prefix := estest.Prefix()
	node.Cleanup(t, prefix)

	journal, err := filepath.Abs(filepath.Join(testdata, "journal-bulk2000-live.jsonl.gz"))
	if err != nil {
		t.Fatal(err)
	}
	recs := bulkRecords(t, journal)
	var eventIDs []string
	last := map[string]*core.Record{} // job key -> its last snapshot
	for _, r := range recs {
		if r.Kind != core.KindEvent || r.Job == nil || r.Event == nil {
			t.Fatalf("the bulk fixture has a record that is not a job event: %s", r.ID)
		}
		eventIDs = append(eventIDs, r.ID)
		last[elasticsearch.JobKey(r.Cluster, r.Job.JobID, r.Job.TSubmit)] = r
	}
	if len(eventIDs) != 22000 || len(last) != 2000 {
		t.Fatalf("fixture: %d events, %d jobs; want 22000 and 2000", len(eventIDs), len(last))
	}

	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("FXS_TEST_SEED"); s != "" {
		seed, _ = strconv.ParseUint(s, 10, 64)
	}
	t.Logf("random kill points from seed %d (FXS_TEST_SEED=%d to repeat)", seed, seed)
	rng := rand.New(rand.NewPCG(seed, 3))

	target, err := url.Parse(node.URL)
	if err != nil {
		t.Fatal(err)
	}
	hold := &bulkHold{held: make(chan string, 1), quit: make(chan struct{})}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = hold
	rp.ErrorLog = log.New(io.Discard, "", 0) // the held requests end in "context canceled"
	proxy := httptest.NewServer(rp)
	t.Cleanup(func() {
		close(hold.quit)
		proxy.Close()
	})

	dir := t.TempDir()
	events, jobs := prefix+"events-*", prefix+"jobs"
	config := writeFile(t, dir, "config.yaml", fmt.Sprintf(`
data_dir: %s/state
cluster: test
shutdown_timeout: 2s
log: {level: info}
sources:
  journal: {type: replay, path: %s, pace: max, user_lookup: none}
sinks:
  es:
    type: elasticsearch
    inputs: [journal]
    addresses: [%s]
    flavor: opensearch
    profile: native
    events: {index: "%sevents-%%Y.%%m.%%d"}
    jobs: {index: %s}
    templates: {name: %stpl, replicas: 0}
    # Small bulks, several at once: a kill always finds some in flight.
    flush: {max_records: 100, interval: 0s}
    in_flight: 4
    request_timeout: 60s
    bulk_retry: {initial_backoff: 10ms, max_backoff: 100ms}
    retry: {initial_backoff: 20ms, max_backoff: 200ms}
    batch: {max_records: 1000}
`, dir, journal, proxy.URL, prefix, jobs, prefix))

	start := time.Now()
	var logs strings.Builder
	p := startES(t, dir, config)
	const kills = 5
	killed := 0
kill:
	for killed < kills {
		// The next kill: some bulks on, before or after the node applied
		// the held one (about 500 bulks make the whole replay).
		hold.arm(hold.count()+1+rng.IntN(70), rng.IntN(2) == 0)
		var what string
		select {
		case what = <-hold.held:
		case <-p.done:
			if p.cmd.ProcessState.ExitCode() != 0 {
				t.Fatalf("fluxstream exited (%v) after %d of %d kills; log:\n%s", p.cmd.ProcessState, killed, kills, p.log)
			}
			// Done before the next kill: check what it left (and fail
			// below for the kills that did not happen).
			break kill
		case <-time.After(2 * time.Minute):
			t.Fatalf("no bulk request held after 2 minutes (%d kills so far); log:\n%s", killed, p.log)
		}
		// Let the other bulks of the write move on a little.
		time.Sleep(time.Duration(rng.IntN(15)) * time.Millisecond)
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
		killed++
		fmt.Fprintf(&logs, "=== kill %d: %s\n%s", killed, what, p.log)
		t.Logf("kill %d at %s: %s", killed, time.Since(start).Round(time.Millisecond), what)
		time.Sleep(time.Duration(rng.IntN(20)) * time.Millisecond)
		p = startES(t, dir, config)
	}
	hold.arm(0, false)

	// The last process finishes the replay, drains its spool and exits 0.
	// A starved machine makes the node slow, not stuck: fail only when the
	// indices stop growing for 3 minutes, not on a total time.
	progress, stillSince := -1, time.Now()
	for done := false; !done; {
		select {
		case <-p.done:
			done = true
		case <-time.After(5 * time.Second):
			if n := node.Count(t, events, "") + node.Count(t, jobs, ""); n != progress {
				progress, stillSince = n, time.Now()
			} else if time.Since(stillSince) > 3*time.Minute {
				t.Fatalf("fluxstream made no progress for 3 minutes after the last kill (%d documents); log:\n%s", n, p.log)
			}
		}
	}
	if code := p.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("the last fluxstream exited %d; log:\n%s\nearlier processes:\n%s", code, p.log, logs.String())
	}
	// Its exit says everything is acknowledged; the counts say the node
	// has it (polled: a refresh makes it searchable).
	deadline := time.Now().Add(30 * time.Second)
	for {
		ne, nj := node.Count(t, events, ""), node.Count(t, jobs, "")
		if ne == len(eventIDs) && nj == len(last) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after exit 0: %d event documents (want %d), %d job documents (want %d); log:\n%s\nearlier processes:\n%s",
				ne, len(eventIDs), nj, len(last), p.log, logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}

	// Exactly one event document per event id: the count is the number
	// of ids and each id is there once, over all the daily indices.
	got := eventHits(t, node, events, eventIDs)
	missing := 0
	for _, id := range eventIDs {
		if got[id] > 1 {
			t.Errorf("events index has %d documents %s", got[id], id)
		}
		if got[id] == 0 {
			if missing < 5 {
				t.Errorf("events index has no document %s", id)
			}
			missing++
		}
	}
	if missing > 0 {
		t.Errorf("events index misses %d of %d events", missing, len(eventIDs))
	}

	// One job document per job, its final snapshot.
	if n := node.Count(t, jobs, "NOT job.state:INACTIVE"); n != 0 {
		t.Errorf("%d job documents not INACTIVE", n)
	}
	keys := make([]string, 0, len(last))
	for k := range last {
		keys = append(keys, k)
	}
	docs := mgetDocs(t, node, jobs, keys)
	bad := 0
	for _, k := range keys {
		d, r := docs[k], last[k]
		want := elasticsearch.Version(r.Event.Timestamp)
		if !d.Found || d.Version != want || d.Source.Job.State != "INACTIVE" || r.Job.State != "INACTIVE" {
			if bad < 5 {
				t.Errorf("job document %s: found %v, version %d, state %q; want version %d (of %s), state INACTIVE",
					k, d.Found, d.Version, d.Source.Job.State, want, r.ID)
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d job documents not at their final snapshot", bad, len(keys))
	}
	if killed < kills {
		t.Errorf("the replay ended after %d of %d kills: too few bulk requests held", killed, kills)
	}
	t.Logf("%d event and %d job documents exact after %d kill -9 mid-bulk (%d bulk requests in all) in %s",
		len(eventIDs), len(keys), killed, hold.count(), time.Since(start).Round(time.Millisecond))
}
