package metrics_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/core/coretest"
	"github.com/fluxstream/fluxstream/internal/builtin"
	"github.com/fluxstream/fluxstream/internal/metrics"
	"github.com/fluxstream/fluxstream/internal/metrics/metricstest"
)

// A plugin that panics in its second write of every life is restarted
// each time: the restarts counter equals the failed writes, and one less
// than the successful ones (each life delivers one batch).
func TestPluginRestarts(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "variant")
	build := exec.Command("go", "build", "-o", bin, "./plugins/host/testdata/variant")
	build.Dir = "../.."
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	data, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer hook.Close()
	g := coretest.Build(t, builtin.Registry(), fmt.Sprintf(`
data_dir: %s/state
sources:
  journal: {type: replay, path: embedded:scenario, user_lookup: none}
sinks:
  hook:
    type: plugin
    inputs: [journal]
    path: %s
    sha256: %s
    env: {FXS_VARIANT_PANIC: "2"}
    config: {url: %s}
    restart: {initial_backoff: 1ms, max_backoff: 5ms}
    retry: {initial_backoff: 1ms, max_backoff: 5ms}
    batch: {max_records: 40}
`, dir, bin, hex.EncodeToString(sum[:]), hook.URL))
	m := metrics.New(metrics.Options{Logger: coretest.Quiet()})
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	p := core.NewPipeline(g, core.RunOptions{Logger: coretest.Quiet(), ShutdownTimeout: 10 * time.Second})
	m.Attach(p)
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	s := metricstest.Get(t, srv.URL+"/metrics")
	restarts := s.Must(t, "fluxstream_plugin_restarts_total", "sink", "hook")
	attempts, attempted, _ := s.Histogram("fluxstream_sink_batch_records", "sink", "hook")
	failed, _, _ := s.Histogram("fluxstream_sink_write_duration_seconds", "sink", "hook", "result", "error")
	delivered := s.Must(t, "fluxstream_node_records_out_total", "node", "hook")
	emitted := s.Must(t, "fluxstream_node_records_out_total", "node", "journal")
	t.Logf("%v records in %d write attempts (%d failed), %v restarts", delivered, attempts, failed, restarts)
	if delivered != emitted || restarts < 2 || restarts != float64(failed) || attempts-failed != failed+1 {
		t.Errorf("delivered %v of %v; %v restarts, %d failed attempts of %d (batch_records sum %v)",
			delivered, emitted, restarts, failed, attempts, attempted)
	}
}
