package fluxtest

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// Positions in the recorded scenario, counted in journal responses of
// journal-scenario-live-full.jsonl (after its leading sentinel).
const (
	// ScenarioPurgeAfter is where job-purge-inactive arrived (wire capture
	// message 356 follows the 353rd journal response, counting the
	// sentinel; 352 without it).
	ScenarioPurgeAfter = 352
	// ScenarioPurgeSeq is the event's sequence number in the capture.
	ScenarioPurgeSeq = 504
)

// Scenario loads the recorded scenario as a simulated instance: the live
// stream with the purge event at the place the capture shows, and the
// before-purge backlog as the reference for committed events. dir is the
// repository's testdata/flux.
func Scenario(dir string) (*Instance, error) {
	items, err := LoadTimeline(filepath.Join(dir, "journal-scenario-live-full.jsonl"))
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(filepath.Join(dir, "event-job-purge-inactive.jsonl"))
	if err != nil {
		return nil, err
	}
	var ev struct {
		Topic   string          `json:"topic"`
		Seq     uint32          `json:"seq"`
		Payload json.RawMessage `json:"payload"`
	}
	if err := json.Unmarshal(raw, &ev); err != nil {
		return nil, fmt.Errorf("event-job-purge-inactive.jsonl: %w", err)
	}
	items = InsertEvent(items, ScenarioPurgeAfter, ev.Topic, ev.Seq, ev.Payload)
	ref, err := LoadBacklog(filepath.Join(dir, "journal-backlog-full-before-purge.jsonl"))
	if err != nil {
		return nil, err
	}
	return NewInstance(items, ref), nil
}

// StartScenario serves the recorded scenario (dir is testdata/flux) on a
// new broker that the test's cleanup closes.
func StartScenario(t testing.TB, dir string) (*Broker, *Instance) {
	t.Helper()
	in, err := Scenario(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewBroker(t.TempDir(), in)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	return b, in
}
