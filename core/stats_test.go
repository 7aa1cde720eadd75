package core_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core"
)

func statsOf(p *core.Pipeline, node string) core.StatsSnapshot {
	for _, s := range p.Stats() {
		if s.Node == node {
			return s
		}
	}
	return core.StatsSnapshot{}
}

func sinkHealth(p *core.Pipeline, node string) core.SinkHealth {
	for _, s := range p.Health().Sinks {
		if s.Node == node {
			return s
		}
	}
	return core.SinkHealth{}
}

// writeLog is a SinkObserver that sums what it is told.
type writeLog struct {
	mu             sync.Mutex
	okRecords      map[string]int
	failedAttempts map[string]int
}

func (w *writeLog) ObserveWrite(sink string, records int, took time.Duration, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if took <= 0 {
		panic("non-positive write latency")
	}
	if err != nil {
		w.failedAttempts[sink]++
		return
	}
	w.okRecords[sink] += records
}

func (w *writeLog) get(sink string) (int, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.okRecords[sink], w.failedAttempts[sink]
}

// A hung Write and a failing one are both visible while they last: in
// flight, since when, the error; the oldest waiting record's age grows;
// the observer sees every attempt; everything clears once delivered.
func TestSinkStateWhileStuckAndFailing(t *testing.T) {
	for _, buf := range []string{"disk", "memory"} {
		t.Run(buf, func(t *testing.T) {
			g, inst := mustBuild(t, `
sources:
  gen: {type: gen, count: 500, batch: 50, wait: true}
sinks:
  hung: {type: mem, inputs: [gen], batch: {max_records: 100}, buffer: {type: `+buf+`, max_records: 1000}}
  failing: {type: mem, inputs: [gen], fail_first: 1000000, retry: {initial_backoff: 1ms, max_backoff: 2ms}, buffer: {type: `+buf+`, max_records: 1000}}
  fine: {type: mem, inputs: [gen], buffer: {type: `+buf+`, max_records: 1000}}
`)
			stall := make(chan struct{})
			inst.sinks["hung"].stall = stall
			p := core.NewPipeline(g, core.RunOptions{DataDir: t.TempDir(), Logger: quietLogger(), ShutdownTimeout: 200 * time.Millisecond})
			obs := &writeLog{okRecords: map[string]int{}, failedAttempts: map[string]int{}}
			p.SetSinkObserver(obs)
			if h := p.Health(); h.Phase != core.PhaseStarting {
				t.Errorf("phase before Run = %q", h.Phase)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- p.Run(ctx) }()

			waitFor(t, 10*time.Second, func() bool { return statsOf(p, "fine").Out == 500 })
			waitFor(t, 10*time.Second, func() bool {
				s := statsOf(p, "hung")
				if buf == "memory" {
					return s.InFlight > 0 && s.PendingRecords+s.InFlight == 500
				}
				return s.InFlight > 0 && s.PendingRecords == 500
			})
			waitFor(t, 10*time.Second, func() bool { _, f := obs.get("failing"); return f >= 3 })

			hung := statsOf(p, "hung")
			if hung.WritingSince.IsZero() || !hung.FailingSince.IsZero() || hung.OldestPending.IsZero() {
				t.Errorf("hung sink: writing since %v, failing since %v, oldest %v; want writing, not failing, a record waiting", hung.WritingSince, hung.FailingSince, hung.OldestPending)
			}
			fh := sinkHealth(p, "failing")
			if fh.FailingSince.IsZero() || !strings.Contains(fh.LastError, "destination unavailable") {
				t.Errorf("failing sink health = %+v", fh)
			}
			if f := statsOf(p, "failing"); f.InFlight == 0 || f.Retries == 0 || f.OldestPending.IsZero() {
				t.Errorf("failing sink stats = %+v", f)
			}
			if fine := statsOf(p, "fine"); !fine.OldestPending.IsZero() || fine.InFlight != 0 || fine.PendingRecords != 0 {
				t.Errorf("fine sink stats = %+v; want nothing waiting", fine)
			}
			if ok, _ := obs.get("fine"); ok != 500 {
				t.Errorf("observer saw %d records written to fine, want 500", ok)
			}
			h := p.Health()
			if h.Phase != core.PhaseRunning || len(h.Sources) != 1 || h.Sources[0].Run != core.SourceRunning || !h.Sources[0].Connected {
				t.Errorf("health = %+v", h)
			}

			// The oldest record stays the same while nothing leaves.
			first := statsOf(p, "hung").OldestPending
			time.Sleep(20 * time.Millisecond)
			if again := statsOf(p, "hung").OldestPending; !again.Equal(first) {
				t.Errorf("oldest pending moved from %v to %v while stuck", first, again)
			}

			close(stall)
			waitFor(t, 10*time.Second, func() bool { return statsOf(p, "hung").Out == 500 })
			waitFor(t, 10*time.Second, func() bool {
				s := statsOf(p, "hung")
				return s.OldestPending.IsZero() && s.InFlight == 0 && s.WritingSince.IsZero()
			})
			if ok, _ := obs.get("hung"); ok != 500 {
				t.Errorf("observer saw %d records written to hung, want 500", ok)
			}
			cancel()
			<-done
			if h := p.Health(); h.Phase != core.PhaseStopped || h.Sources[0].Run != core.SourceStopped {
				t.Errorf("health after Run = %+v", h)
			}
		})
	}
}

// A failing sink that recovers clears its failing state; a finite source
// is "finished".
func TestSinkRecoveryClearsFailing(t *testing.T) {
	g, _ := mustBuild(t, `
sources:
  gen: {type: gen, count: 30, batch: 10}
sinks:
  flaky: {type: mem, inputs: [gen], fail_first: 3, retry: {initial_backoff: 1ms, max_backoff: 2ms}}
`)
	p := core.NewPipeline(g, core.RunOptions{DataDir: t.TempDir(), Logger: quietLogger()})
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	s := statsOf(p, "flaky")
	if s.Out != 30 || s.Retries != 3 || !s.FailingSince.IsZero() || s.LastError != "" || !s.OldestPending.IsZero() {
		t.Errorf("after recovery: %+v", s)
	}
	if h := p.Health(); h.Sources[0].Run != core.SourceFinished {
		t.Errorf("source run state = %q, want finished", h.Sources[0].Run)
	}
}

// Records an earlier run left spooled are waiting from the start of the
// next run on.
func TestOldestPendingOfAnEarlierRun(t *testing.T) {
	dir := t.TempDir()
	cfg := `
sources:
  gen: {type: gen, count: %d, wait: true}
sinks:
  out: {type: mem, inputs: [gen]}
`
	g, inst := mustBuild(t, strings.Replace(cfg, "%d", "20", 1))
	inst.sinks["out"].stall = make(chan struct{})
	p := core.NewPipeline(g, core.RunOptions{DataDir: dir, Logger: quietLogger(), ShutdownTimeout: 50 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	waitFor(t, 10*time.Second, func() bool { return inst.sources["gen"].Acked() == 20 })
	cancel()
	<-done

	g2, inst2 := mustBuild(t, strings.Replace(cfg, "%d", "0", 1))
	inst2.sinks["out"].stall = make(chan struct{})
	p2 := core.NewPipeline(g2, core.RunOptions{DataDir: dir, Logger: quietLogger(), ShutdownTimeout: 50 * time.Millisecond})
	before := time.Now()
	ctx2, cancel2 := context.WithCancel(context.Background())
	go func() { done <- p2.Run(ctx2) }()
	waitFor(t, 10*time.Second, func() bool { return statsOf(p2, "out").PendingRecords == 20 })
	if old := statsOf(p2, "out").OldestPending; old.IsZero() || old.Before(before.Add(-time.Second)) {
		t.Errorf("oldest pending of the earlier run's records = %v, want about this run's start %v", old, before)
	}
	cancel2()
	<-done
}
