package metrics

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/fluxstream/fluxstream/core"
)

// Readiness is the body of /readyz: the verdict and every part's state.
type Readiness struct {
	Ready bool `json:"ready"`
	// Phase is the pipeline's (starting, running, stopping, stopped), or
	// "none" before a pipeline is attached.
	Phase          string        `json:"phase"`
	UnhealthyAfter string        `json:"unhealthy_after"`
	Sources        []SourceReady `json:"sources"`
	Sinks          []SinkReady   `json:"sinks"`
}

// SourceReady is one source in /readyz.
type SourceReady struct {
	Node string `json:"node"`
	// State: connected (a source with a peer), running (one without),
	// connecting, finished, failed, stopped, starting.
	State  string `json:"state"`
	Ready  bool   `json:"ready"`
	Detail string `json:"detail,omitempty"`
}

// SinkReady is one sink in /readyz.
type SinkReady struct {
	Node string `json:"node"`
	// State: ok, failing (its batch fails and is retried) or hung (one
	// Write has run longer than unhealthy_after).
	State      string  `json:"state"`
	Ready      bool    `json:"ready"`
	ForSeconds float64 `json:"for_seconds,omitempty"` // how long failing or hung
	Error      string  `json:"error,omitempty"`
}

// Readiness evaluates the attached pipeline now.
func (m *Metrics) Readiness() Readiness {
	_, r := m.readiness(m.cur.Load(), m.opts.Now())
	return r
}

// readiness: ready when a pipeline runs (or drains after its sources
// finished), every source is connected or finished, and no sink has been
// failing, or stuck in one Write, longer than unhealthy_after.
func (m *Metrics) readiness(p *core.Pipeline, now time.Time) (bool, Readiness) {
	ua := m.opts.UnhealthyAfter
	r := Readiness{Phase: "none", UnhealthyAfter: ua.String(), Sources: []SourceReady{}, Sinks: []SinkReady{}}
	if p == nil {
		return false, r
	}
	h := p.Health()
	r.Phase = h.Phase
	ready := h.Phase == core.PhaseRunning || h.Phase == core.PhaseStopping
	for _, s := range h.Sources {
		sr := SourceReady{Node: s.Node, Detail: s.Detail}
		switch {
		case s.Run == "":
			sr.State = "starting"
		case s.Run == core.SourceRunning && s.Connected:
			sr.State, sr.Ready = "connected", true
			if _, ok := p.Node(s.Node).(core.StateReporter); !ok {
				sr.State = "running"
			}
		case s.Run == core.SourceRunning:
			sr.State = "connecting"
		case s.Run == core.SourceFinished:
			sr.State, sr.Ready = "finished", true
		default:
			sr.State = s.Run
		}
		ready = ready && sr.Ready
		r.Sources = append(r.Sources, sr)
	}
	for _, s := range h.Sinks {
		sk := SinkReady{Node: s.Node, State: "ok", Ready: true}
		if !s.FailingSince.IsZero() {
			sk.State, sk.ForSeconds, sk.Error = "failing", since(now, s.FailingSince), s.LastError
			sk.Ready = now.Sub(s.FailingSince) <= ua
		} else if !s.WritingSince.IsZero() && now.Sub(s.WritingSince) > ua {
			sk.State, sk.ForSeconds, sk.Ready = "hung", since(now, s.WritingSince), false
		}
		ready = ready && sk.Ready
		r.Sinks = append(r.Sinks, sk)
	}
	r.Ready = ready
	return ready, r
}

// healthz says the process is alive: it answers.
func (m *Metrics) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Write([]byte("ok\n"))
}

// readyz answers 200 or 503 with the Readiness as JSON.
func (m *Metrics) readyz(w http.ResponseWriter, _ *http.Request) {
	r := m.Readiness()
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if !r.Ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(r)
}
