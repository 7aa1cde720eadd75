package core_test

import (
	"context"
	"slices"
	"testing"

	"github.com/fluxstream/fluxstream/core"
)

// readingSource is the generator as a source that must never be held
// (like flux: its broker buffers what is not read).
type readingSource struct{ *genSource }

func (readingSource) KeepsReading() bool { return true }

// A source that keeps reading is not held for a slower sink: the sink
// falls behind its window and reads back from the spool, and still gets
// everything in order. (TestSlowSinkKeepsPace: other sources are held.)
func TestKeepsReadingSourceIsNotHeld(t *testing.T) {
	reg, inst := testRegistry()
	reg.RegisterSource("reading", "generator that must not be held", func(nc *core.NodeConfig) (core.Source, error) {
		g := &genSource{Batch: 10}
		if err := nc.Decode(g); err != nil {
			return nil, err
		}
		return readingSource{g}, nil
	})
	g := buildWith(t, reg, `
sources:
  gen: {type: reading, count: 20000, batch: 100}
sinks:
  slow:
    type: mem
    inputs: [gen]
    delay: 20ms
    batch: {max_records: 200}
    buffer: {max_records: 1000}
`)
	p := core.NewPipeline(g, core.RunOptions{DataDir: t.TempDir(), Logger: quietLogger()})
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := inst.sinks["slow"].Got(); !slices.Equal(got, ids("rec-", 20000, nil)) {
		t.Fatalf("slow sink got %d records", len(got))
	}
	// The sink takes 200 records every 20 ms: the source, not held, is
	// far ahead, and most of the records come back from disk.
	if s := stats(t, p, "slow"); s.ReadBack < 10000 {
		t.Errorf("slow sink read back %d records: the source was held", s.ReadBack)
	}
}
