package elasticsearch

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/internal/estest"
	"github.com/fluxstream/fluxstream/sources/replay"
)

const testdata = "../../testdata/flux"

func TestMain(m *testing.M) { os.Exit(estest.Main(m)) }

type collector struct {
	mu   sync.Mutex
	recs []*core.Record
}

func (c *collector) Emit(_ context.Context, recs []*core.Record, ack func()) error {
	c.mu.Lock()
	c.recs = append(c.recs, recs...)
	c.mu.Unlock()
	ack()
	return nil
}

var (
	recCacheMu sync.Mutex
	recCache   = map[string][]*core.Record{}
)

// records replays a journal and returns what the source emits (cached:
// records are immutable).
func records(t testing.TB, path, include string) []*core.Record {
	t.Helper()
	recCacheMu.Lock()
	defer recCacheMu.Unlock()
	if r, ok := recCache[path+"|"+include]; ok {
		return r
	}
	nc, err := core.ParseNodeConfig(core.KindSource, "src", []byte("path: "+path+"\nuser_lookup: none\ncluster: test\n"+include))
	if err != nil {
		t.Fatal(err)
	}
	src, err := replay.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	src.(core.Provisioner).Provision(context.Background(), core.NodeContext{Name: "src", Logger: quiet()})
	defer src.(io.Closer).Close()
	c := &collector{}
	if err := src.Run(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	recCache[path+"|"+include] = c.recs
	return c.recs
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func scenario(t testing.TB) []*core.Record { return records(t, "embedded:scenario", "") }

func bulk2000(t testing.TB) []*core.Record {
	return records(t, testdata+"/journal-bulk2000-live.jsonl.gz", "")
}

// newSink decodes yaml (addresses added unless given), provisions and
// prepares the sink.
func newSink(t testing.TB, url, yaml string) *Sink {
	t.Helper()
	if !strings.Contains(yaml, "addresses:") {
		yaml = "addresses: [" + url + "]\n" + yaml
	}
	nc, err := core.ParseNodeConfig(core.KindSink, "es", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	sk, err := New(nc)
	if err != nil {
		t.Fatal(err)
	}
	s := sk.(*Sink)
	if err := s.Provision(context.Background(), core.NodeContext{Name: "es", Kind: core.KindSink, Logger: quiet()}); err != nil {
		t.Fatal(err)
	}
	if err := s.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close(context.Background()) })
	return s
}

// sinkYAML is the config of a test sink writing to prefix-named indices.
func sinkYAML(prefix, profile, extra string) string {
	y := fmt.Sprintf(`flavor: opensearch
profile: %s
events: {index: "%sevents-%%Y.%%m.%%d"}
jobs: {index: "%sjobs"}
templates: {name: "%stpl", replicas: 0}
`, profile, prefix, prefix, prefix)
	if !strings.Contains(extra, "flush:") {
		y += "flush: {interval: 0s}\n"
	}
	if !strings.Contains(extra, "bulk_retry:") {
		y += "bulk_retry: {initial_backoff: 10ms, max_backoff: 100ms}\n"
	}
	return y + extra
}

// deliver writes recs in batches of n as the runtime does: a failed
// record is retried until it goes through, unless it is permanent, then
// it is returned. It fails t after maxAttempts writes of one batch.
func deliver(t testing.TB, s *Sink, recs []*core.Record, n int) (perm map[string]error, writes int) {
	t.Helper()
	perm = map[string]error{}
	for i := 0; i < len(recs); i += n {
		batch := recs[i:min(i+n, len(recs))]
		for attempt := 0; len(batch) > 0; attempt++ {
			if attempt > 200 {
				t.Fatalf("batch at %d still failing after %d writes", i, attempt)
			}
			writes++
			err := s.Write(context.Background(), batch)
			if err == nil {
				break
			}
			var be *core.BatchError
			if !errors.As(err, &be) {
				if core.IsPermanent(err) {
					t.Fatalf("whole batch permanent: %v", err)
				}
				continue
			}
			var retry []*core.Record
			for j, r := range batch {
				e, failed := be.Failed[j]
				switch {
				case !failed:
				case core.IsPermanent(e):
					perm[r.ID] = e
				default:
					retry = append(retry, r)
				}
			}
			batch = retry
		}
	}
	return perm, writes
}
