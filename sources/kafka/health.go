package kafka

import (
	"context"
	"sync"
	"time"

	"github.com/fluxstream/fluxstream/core"
)

var _ core.StateReporter = (*Source)(nil)

// pingEvery is how often Run asks the brokers whether they answer, for
// /readyz: franz-go retries a lost broker quietly, so a fetch that merely
// waits says nothing.
const pingEvery = 5 * time.Second

// reach is the outcome of the last ping.
type reach struct {
	mu      sync.Mutex
	checked bool
	err     error
}

func (r *reach) set(err error) {
	r.mu.Lock()
	r.checked, r.err = true, err
	r.mu.Unlock()
}

// SourceState: connected once a broker answered the last ping.
func (s *Source) SourceState() core.SourceState {
	s.reach.mu.Lock()
	defer s.reach.mu.Unlock()
	switch {
	case !s.reach.checked:
		return core.SourceState{Detail: "connecting to the brokers"}
	case s.reach.err != nil:
		return core.SourceState{Detail: "no broker answers: " + s.redact.String(s.reach.err.Error()) + "; retrying"}
	}
	return core.SourceState{Connected: true}
}

// pingLoop pings the brokers every pingEvery until ctx ends.
func (s *Source) pingLoop(ctx context.Context) {
	for {
		pctx, cancel := context.WithTimeout(ctx, pingEvery)
		err := s.client.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		s.reach.set(err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(pingEvery):
		}
	}
}
