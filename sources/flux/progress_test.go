package flux_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/core/coretest"
	"github.com/fluxstream/fluxstream/sources/flux"
	"github.com/fluxstream/fluxstream/sources/flux/fluxtest"
)

// Progress counts the backlog's events while it is read and says when the
// source follows live events; a reconnect's backlog counts what the
// checkpoint had as read too.
func TestProgressBacklog(t *testing.T) {
	h := newHarness(t)
	h.in.SeekTo(h.in.PosAfterResponses(fluxtest.ScenarioPurgeAfter))
	want, _ := recordedEvents(t, "journal-backlog-full-before-purge.jsonl")
	reg := core.NewRegistry()
	flux.Register(reg)
	sink := &coretest.Collector{}
	sink.Register(reg)
	g := coretest.Build(t, reg, fmt.Sprintf(`
sources:
  flux: {type: flux, uri: %s, user_lookup: none}
sinks:
  out: {type: collect, inputs: [flux], buffer: {sync_interval: 5ms}}
`, h.broker.URI()))
	src := g.Sources()[0].Impl.(core.Progresser)
	if p := src.Progress(); p.CatchingUp || p.Events != 0 {
		t.Fatalf("before the run: %+v", p)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- core.NewPipeline(g, core.RunOptions{DataDir: h.dataDir, Logger: coretest.Quiet()}).Run(ctx)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for len(sink.All()) < len(want) || src.Progress().CatchingUp {
		if time.Now().After(deadline) {
			t.Fatalf("backlog not read: %d records, progress %+v", len(sink.All()), src.Progress())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if p := src.Progress(); p.Events != int64(len(want)) || p.Total != 0 || p.Unit != "events" {
		t.Errorf("after the backlog: %+v, want %d events and no total", p, len(want))
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}
