package core_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fluxstream/fluxstream/core"
)

// Components used by the core tests: a generator source, a transform that
// drops or splits, a router, and a sink that records what it got and can
// be stalled or made to fail. They go through the same registry, config
// decoding and runtime as the real ones.

type genSource struct {
	Count    int           `yaml:"count"`
	BadEvery int           `yaml:"bad_every"` // ids of every Nth record end in "-bad" (transforms fail on them)
	Batch    int           `yaml:"batch"`
	Wait     bool          `yaml:"wait"` // keep running after emitting, until cancelled
	Interval time.Duration `yaml:"interval"`

	mu    sync.Mutex
	acked int
	ackCh chan int
}

func (g *genSource) Validate() error {
	if g.Count < 0 {
		return core.Fieldf("count", "must not be negative")
	}
	return nil
}

func (g *genSource) Run(ctx context.Context, out core.Emitter) error {
	batch := max(g.Batch, 1)
	for i := 0; i < g.Count; i += batch {
		var recs []*core.Record
		for j := i; j < min(i+batch, g.Count); j++ {
			id := fmt.Sprintf("rec-%05d", j)
			if g.BadEvery > 0 && j%g.BadEvery == 0 {
				id += "-bad"
			}
			recs = append(recs, &core.Record{Kind: core.KindEvent, ID: id,
				Job: &core.Job{ID: uint64(j % 7)}, Event: &core.Event{Name: "submit", Timestamp: float64(j)}})
		}
		n := len(recs)
		if err := out.Emit(ctx, recs, func() {
			g.mu.Lock()
			g.acked += n
			g.mu.Unlock()
			if g.ackCh != nil {
				g.ackCh <- n
			}
		}); err != nil {
			return err
		}
		if g.Interval > 0 {
			select {
			case <-time.After(g.Interval):
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	if g.Wait {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

func (g *genSource) Acked() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.acked
}

// everyNth drops every Nth record and duplicates records whose index is a
// multiple of Split.
type everyNth struct {
	Drop  int `yaml:"drop"`
	Split int `yaml:"split"`
}

func (t *everyNth) Process(_ context.Context, r *core.Record) ([]*core.Record, error) {
	var n int
	fmt.Sscanf(r.ID, "rec-%d", &n)
	if t.Drop > 0 && n%t.Drop == 0 {
		return nil, nil
	}
	if strings.HasSuffix(r.ID, "-bad") {
		return nil, errors.New("bad record")
	}
	if t.Split > 0 && n%t.Split == 0 {
		a, b := r.Clone(), r.Clone()
		a.ID += "-a"
		b.ID += "-b"
		return []*core.Record{a, b}, nil
	}
	return []*core.Record{r}, nil
}

// parity routes even records to "even", odd ones to "odd".
type parity struct{}

func (parity) Outputs() []string { return []string{"even", "odd"} }

func (parity) Route(_ context.Context, r *core.Record) ([]string, error) {
	var n int
	fmt.Sscanf(r.ID, "rec-%d", &n)
	if n%2 == 0 {
		return []string{"even"}, nil
	}
	return []string{"odd"}, nil
}

type memSink struct {
	FailFirst int    `yaml:"fail_first"` // fail this many Write calls
	Refuse    string `yaml:"refuse"`     // records whose ID has this suffix are refused for good
	// FlakyEvery fails every Nth record transiently on its first attempt
	// (a per-record failure inside a batch that otherwise succeeds).
	FlakyEvery int `yaml:"flaky_every"`
	// ProvisionWaits makes Provision wait for the end of ctx (a sink that
	// reads its state from a remote service that does not answer).
	ProvisionWaits bool `yaml:"provision_waits"`
	// Delay makes every Write take this long (a sink slower than its
	// source, but alive).
	Delay time.Duration `yaml:"delay"`
	// BatchDefault is the sink's own batch size (core.BatchSizer).
	BatchDefault int `yaml:"batch_default"`
	provisioning chan struct{}
	tried        map[string]bool

	mu      sync.Mutex
	got     []string
	sizes   []int // of every batch Write got
	writes  int
	stall   chan struct{} // when non-nil, Write waits for it to close
	closed  bool
	written chan struct{}
}

func (s *memSink) Provision(ctx context.Context, _ core.NodeContext) error {
	if !s.ProvisionWaits {
		return nil
	}
	close(s.provisioning)
	<-ctx.Done()
	return fmt.Errorf("reading the sink's state: %w", ctx.Err())
}

func (s *memSink) Write(ctx context.Context, batch []*core.Record) error {
	s.mu.Lock()
	stall := s.stall
	s.mu.Unlock()
	if stall != nil {
		select {
		case <-stall:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if s.Delay > 0 {
		time.Sleep(s.Delay)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sizes = append(s.sizes, len(batch))
	s.writes++
	if s.writes <= s.FailFirst {
		return fmt.Errorf("destination unavailable (attempt %d)", s.writes)
	}
	var be core.BatchError
	for i, r := range batch {
		if s.Refuse != "" && strings.HasSuffix(r.ID, s.Refuse) {
			be.Fail(i, core.Permanent(errors.New("mapping rejected")))
			continue
		}
		if n := 0; s.FlakyEvery > 0 && !s.tried[r.ID] {
			fmt.Sscanf(r.ID, "rec-%d", &n)
			if n%s.FlakyEvery == 0 {
				if s.tried == nil {
					s.tried = map[string]bool{}
				}
				s.tried[r.ID] = true
				be.Fail(i, errors.New("shard busy, try again"))
				continue
			}
		}
		s.got = append(s.got, r.ID)
	}
	if s.written != nil {
		select {
		case s.written <- struct{}{}:
		default:
		}
	}
	return be.ErrOrNil()
}

func (s *memSink) DefaultBatchRecords() int { return s.BatchDefault }

// LargestBatch is the most records one Write got.
func (s *memSink) LargestBatch() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Max(append([]int{0}, s.sizes...))
}

func (s *memSink) Close(context.Context) error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	return nil
}

func (s *memSink) Got() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.got...)
}

// testRegistry registers the test components; built instances are
// collected so tests can reach them by node name.
type instances struct {
	mu      sync.Mutex
	sources map[string]*genSource
	sinks   map[string]*memSink
}

func testRegistry() (*core.Registry, *instances) {
	inst := &instances{sources: map[string]*genSource{}, sinks: map[string]*memSink{}}
	r := core.NewRegistry()
	r.RegisterSource("gen", "test generator", func(nc *core.NodeConfig) (core.Source, error) {
		g := &genSource{Batch: 10}
		if err := nc.Decode(g); err != nil {
			return nil, err
		}
		inst.mu.Lock()
		inst.sources[nc.Name] = g
		inst.mu.Unlock()
		return g, nil
	})
	r.RegisterTransform("nth", "drop/split", func(nc *core.NodeConfig) (any, error) {
		t := &everyNth{}
		return t, nc.Decode(t)
	})
	r.RegisterTransform("parity", "router", func(nc *core.NodeConfig) (any, error) {
		return parity{}, nc.Decode(&struct{}{})
	})
	r.RegisterSink("mem", "test sink", func(nc *core.NodeConfig) (core.Sink, error) {
		s := &memSink{provisioning: make(chan struct{})}
		if err := nc.Decode(s); err != nil {
			return nil, err
		}
		inst.mu.Lock()
		inst.sinks[nc.Name] = s
		inst.mu.Unlock()
		return s, nil
	})
	return r, inst
}
