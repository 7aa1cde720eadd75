package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/schollz/progressbar/v3"

	"github.com/fluxstream/fluxstream/core"
)

// progressLogEvery is how often a catch-up is logged when stderr is not a
// terminal; FLUXSTREAM_PROGRESS_EVERY overrides it (tests).
const progressLogEvery = 10 * time.Second

// barDelay keeps a short catch-up (the demo's) from flashing a bar.
const barDelay = time.Second

type progressSource struct {
	name string
	p    core.Progresser
}

// progressReporter shows how a catch-up (a replay, a journal backlog)
// goes: a bar with events/s and ETA on a terminal, an INFO line every
// progressLogEvery otherwise, and one line when it is over.
type progressReporter struct {
	srcs  []progressSource
	out   io.Writer
	tty   bool
	log   *slog.Logger
	every time.Duration

	bar       *progressbar.ProgressBar
	started   time.Time // of the current catch-up
	lastLog   time.Time
	lastEv    int64
	lastEvAt  time.Time
	rate      float64
	events    int64
	reporting bool
}

// startProgress reports on graph's sources until ctx ends; stop waits for
// the last line.
func startProgress(ctx context.Context, graph *core.Graph, stderr io.Writer, log *slog.Logger) (stop func()) {
	r := &progressReporter{out: stderr, log: log, every: progressLogEvery}
	for _, n := range graph.Sources() {
		if p, ok := n.Impl.(core.Progresser); ok {
			r.srcs = append(r.srcs, progressSource{n.Name, p})
		}
	}
	if len(r.srcs) == 0 {
		return func() {}
	}
	if f, ok := stderr.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
		r.tty = true
	}
	if d, err := time.ParseDuration(os.Getenv("FLUXSTREAM_PROGRESS_EVERY")); err == nil && d > 0 {
		r.every = d
	}
	tick := 200 * time.Millisecond
	if !r.tty {
		tick = min(tick, r.every/4)
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(tick)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				r.sample(time.Now(), true)
				return
			case now := <-t.C:
				r.sample(now, false)
			}
		}
	}()
	return func() { cancel(); <-done }
}

// sample polls the sources once; last is the final call at shutdown.
func (r *progressReporter) sample(now time.Time, last bool) {
	var sum core.Progress
	var names []string
	var all int64 // events of every source, for the final count
	for _, s := range r.srcs {
		p := s.p.Progress()
		all += p.Events
		if !p.CatchingUp {
			continue
		}
		sum.CatchingUp = true
		sum.Events += p.Events
		sum.Done += p.Done
		sum.Total += p.Total
		sum.Unit = p.Unit
		names = append(names, s.name)
	}
	if !sum.CatchingUp || last {
		r.events = all
		if r.reporting {
			r.end(now, sum, last)
		}
		r.started = time.Time{}
		return
	}
	if r.started.IsZero() {
		r.started, r.lastLog, r.lastEvAt, r.lastEv = now, now, now, sum.Events
		return
	}
	if dt := now.Sub(r.lastEvAt).Seconds(); dt >= 1 || r.rate == 0 && dt > 0 {
		inst := float64(sum.Events-r.lastEv) / dt
		if r.rate == 0 {
			r.rate = inst
		} else {
			r.rate = 0.7*r.rate + 0.3*inst
		}
		r.lastEv, r.lastEvAt = sum.Events, now
	}
	if now.Sub(r.started) < barDelay && r.tty {
		return
	}
	r.reporting = true
	if r.tty {
		r.draw(sum)
		return
	}
	if now.Sub(r.lastLog) >= r.every {
		r.lastLog = now
		args := []any{"sources", names, "events", sum.Events, "events_per_s", int64(r.rate)}
		if sum.Total > 0 {
			args = append(args, "done", fmt.Sprintf("%.1f%%", 100*float64(sum.Done)/float64(sum.Total)))
			if eta, ok := r.eta(now, sum); ok {
				args = append(args, "eta", eta.Round(time.Second).String())
			}
		}
		r.log.Info("catching up", args...)
	}
}

// eta extrapolates the units done so far in this catch-up.
func (r *progressReporter) eta(now time.Time, p core.Progress) (time.Duration, bool) {
	el := now.Sub(r.started)
	if p.Total > 0 && p.Done >= p.Total {
		return 0, true // all read; what is left is in the pipeline
	}
	if p.Done <= 0 || el <= 0 {
		return 0, false
	}
	return time.Duration(float64(el) * float64(p.Total-p.Done) / float64(p.Done)), true
}

func (r *progressReporter) draw(p core.Progress) {
	if r.bar == nil {
		total := p.Total
		if total <= 0 {
			total = -1 // a spinner: a Flux backlog does not say its length
		}
		r.bar = progressbar.NewOptions64(total,
			progressbar.OptionSetWriter(r.out),
			progressbar.OptionShowBytes(p.Unit == "bytes"),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionFullWidth(),
			progressbar.OptionThrottle(100*time.Millisecond),
			progressbar.OptionClearOnFinish(),
			progressbar.OptionSpinnerType(14),
		)
	}
	r.bar.Describe(fmt.Sprintf("catching up: %d events, %d/s", p.Events, int64(r.rate)))
	if p.Total > 0 {
		r.bar.Set64(p.Done)
	} else {
		r.bar.Add64(0)
	}
}

// end closes the bar and logs how the catch-up went.
func (r *progressReporter) end(now time.Time, p core.Progress, stopped bool) {
	if r.bar != nil {
		r.bar.Finish()
		r.bar.Exit()
		r.bar = nil
	}
	r.reporting, r.rate = false, 0
	if stopped && p.CatchingUp {
		r.log.Info("catch-up interrupted", "events", p.Events, "after", now.Sub(r.started).Round(time.Millisecond).String())
		return
	}
	r.log.Info("caught up", "events", r.events, "took", now.Sub(r.started).Round(time.Millisecond).String())
}
