package host_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/core/coretest"
	"github.com/fluxstream/fluxstream/plugins/host"
)

// benchSink starts a plugin sink against a loopback HTTP server that
// counts the NDJSON lines it is sent.
func benchSink(b *testing.B, path string) (*host.Sink, *atomic.Int64) {
	var lines atomic.Int64
	var buf bytes.Buffer // one request at a time: the sink writes one batch at a time
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf.Reset()
		buf.ReadFrom(r.Body)
		lines.Add(int64(bytes.Count(buf.Bytes(), []byte("\n"))))
	}))
	b.Cleanup(srv.Close)
	g := coretest.Build(b, registry(), fmt.Sprintf(`
sources:
  gen: {type: gen, count: 1}
sinks:%s`, sinkYAML(path, sha(b, path), srv.URL, "")))
	s := g.Sinks()[0].Impl.(*host.Sink)
	ctx := context.Background()
	if err := s.Provision(ctx, core.NodeContext{Name: "out", Logger: coretest.Quiet()}); err != nil {
		b.Fatal(err)
	}
	if err := s.Prepare(ctx); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close(context.Background()) })
	return s, &lines
}

// benchWrite sends b.N records in batches of 1000 (the runtime's default
// batch.max_records) and reports records/s.
func benchWrite(b *testing.B, s *host.Sink, lines *atomic.Int64) {
	const batch = 1000
	recs := make([]*core.Record, batch)
	for i := range recs {
		recs[i] = genRecord("bench", i)
		recs[i].JSON() // the runtime hands sinks records whose JSON form is cached
	}
	ctx := context.Background()
	b.ResetTimer()
	for sent := 0; sent < b.N; sent += batch {
		n := min(batch, b.N-sent)
		if err := s.Write(ctx, recs[:n]); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if got := lines.Load(); got != int64(b.N) {
		b.Fatalf("the server got %d records, want %d", got, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
}

func BenchmarkWebhookGo(b *testing.B) {
	path := goBuild(b, b.TempDir(), "./plugins/examples/webhook/cmd/fluxstream-sink-webhook", "webhook")
	s, lines := benchSink(b, path)
	benchWrite(b, s, lines)
}

func BenchmarkWebhookPython(b *testing.B) {
	dir := b.TempDir()
	path := pythonPlugin(b, dir, "webhook.sh", filepath.Join(repoRoot(b), "plugins", "sdk", "python", "examples", "webhook_sink.py"))
	s, lines := benchSink(b, path)
	benchWrite(b, s, lines)
}
