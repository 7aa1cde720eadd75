package core_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core"
)

// pipeSink is a core.Pipeliner. The wait of its Nth batch returns only
// once batch N+depth-1 was sent (or every record was, or a later Send
// refused), so a runtime that pipelines has exactly depth batches on their
// way at some point, and one that does not never gets past the first.
type pipeSink struct {
	Depth     int `yaml:"depth"`
	Total     int `yaml:"total"`      // records the source sends
	FailBatch int `yaml:"fail_batch"` // the wait of this batch (1-based) fails once
	FullAt    int `yaml:"full_at"`    // this Send (1-based) says the sink is full

	busy    atomic.Bool // a Send or Write is running
	overlap atomic.Bool // two of them ran at once

	mu                  sync.Mutex
	cond                *sync.Cond
	sends, sentRecords  int
	lastFull            int
	failed              bool
	inflight, maxFlight int
	writes              int
	got                 []string // in the order delivered
}

func (p *pipeSink) PipelineDepth() int { return p.Depth }

func (p *pipeSink) enter() func() {
	if p.busy.Swap(true) {
		p.overlap.Store(true)
	}
	return func() { p.busy.Store(false) }
}

func (p *pipeSink) Send(_ context.Context, batch []*core.Record) (func(context.Context) error, bool) {
	p.mu.Lock()
	afterHeld := p.FailBatch > 0 && p.sends == p.FailBatch+1
	p.mu.Unlock()
	if afterHeld {
		// The Send after the held one comes while the runtime retries
		// the failed batch (its Write takes 20 ms): it must wait for it.
		time.Sleep(5 * time.Millisecond)
	}
	defer p.enter()()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.sends++
	n := p.sends
	if n == p.FullAt {
		p.lastFull = n
		p.cond.Broadcast()
		return nil, false
	}
	p.cond.Broadcast() // a new Send releases waits
	for p.FailBatch > 0 && n == p.FailBatch+1 && !p.failed {
		// Hold this Send until the batch before it failed, so that the
		// next Send is due while the runtime retries that batch.
		p.cond.Wait()
	}
	p.sentRecords += len(batch)
	p.inflight++
	p.maxFlight = max(p.maxFlight, p.inflight)
	return func(ctx context.Context) error {
		p.mu.Lock()
		defer p.mu.Unlock()
		for p.sends < n+p.Depth-1 && !(n == p.FailBatch && p.sends > n) && p.sentRecords < p.Total && p.lastFull < n {
			p.cond.Wait()
		}
		p.inflight--
		if n == p.FailBatch {
			p.failed = true
			p.cond.Broadcast()
			return errors.New("destination busy, try again")
		}
		for _, r := range batch {
			p.got = append(p.got, r.ID)
		}
		return nil
	}, true
}

func (p *pipeSink) Write(_ context.Context, batch []*core.Record) error {
	defer p.enter()()
	time.Sleep(20 * time.Millisecond) // long enough for a Send to overlap, were it allowed
	p.mu.Lock()
	defer p.mu.Unlock()
	p.writes++
	if p.lastFull == p.sends { // the batch the sink refused: sent now
		p.sentRecords += len(batch)
		p.cond.Broadcast()
	}
	for _, r := range batch {
		p.got = append(p.got, r.ID)
	}
	return nil
}

func (p *pipeSink) Close(context.Context) error { return nil }

func pipeRegistry() (*core.Registry, *instances, map[string]*pipeSink) {
	reg, inst := testRegistry()
	sinks := map[string]*pipeSink{}
	reg.RegisterSink("pipe", "pipelining test sink", func(nc *core.NodeConfig) (core.Sink, error) {
		p := &pipeSink{}
		p.cond = sync.NewCond(&p.mu)
		if err := nc.Decode(p); err != nil {
			return nil, err
		}
		sinks[nc.Name] = p
		return p, nil
	})
	return reg, inst, sinks
}

// A Pipeliner gets depth batches on their way at once, and everything is
// delivered once and in order: through a failed batch's retry and a Send
// the sink refused, and never with a Send and a Write at the same time.
func TestPipelinedSink(t *testing.T) {
	for _, tc := range []struct {
		name              string
		failBatch, full   int
		wantWrites        int
		wantMaxOnTheirWay int
	}{
		{name: "clean", wantMaxOnTheirWay: 3},
		{name: "retry", failBatch: 4, wantWrites: 1, wantMaxOnTheirWay: 3},
		{name: "full", full: 5, wantWrites: 1, wantMaxOnTheirWay: 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg, inst, sinks := pipeRegistry()
			g := buildWith(t, reg, fmt.Sprintf(`
sources:
  gen: {type: gen, count: 300, batch: 10}
sinks:
  out: {type: pipe, inputs: [gen], depth: 3, total: 300, fail_batch: %d, full_at: %d,
        batch: {max_records: 20}, retry: {initial_backoff: 1ms}}
`, tc.failBatch, tc.full))
			if err := runPipeline(t, g, core.RunOptions{}); err != nil {
				t.Fatal(err)
			}
			p := sinks["out"]
			if want := ids("rec-", 300, nil); !slices.Equal(p.got, want) {
				t.Errorf("delivered %d records, not each once in order: %v", len(p.got), p.got)
			}
			if got := inst.sources["gen"].Acked(); got != 300 {
				t.Errorf("source acknowledged %d of 300", got)
			}
			if p.maxFlight != tc.wantMaxOnTheirWay {
				t.Errorf("at most %d batches on their way, want %d", p.maxFlight, tc.wantMaxOnTheirWay)
			}
			if p.writes != tc.wantWrites {
				t.Errorf("%d Writes, want %d", p.writes, tc.wantWrites)
			}
			if p.overlap.Load() {
				t.Error("a Send and a Write (or two Sends) ran at once")
			}
		})
	}
}
