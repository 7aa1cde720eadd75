package jobstate

import (
	"testing"
)

// BenchmarkReduceBulk parses and reduces the live journal of the
// 2000-job bulk run (22001 responses, 22000 events) from memory, taking
// a snapshot after every event as the journal consumer does. Run with
// -cpu=1; the target is 500k events/s per core.
func BenchmarkReduceBulk(b *testing.B) {
	lines := readLines(b, "journal-bulk2000-live.jsonl.gz")
	var size int64
	for _, l := range lines {
		size += int64(len(l))
	}
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	events := 0
	for b.Loop() {
		states := make(map[uint64]*State, 2048)
		for _, line := range lines {
			resp, err := ParseResponse(line)
			if err != nil {
				b.Fatal(err)
			}
			if resp.IsSentinel() {
				continue
			}
			id := uint64(resp.ID)
			s := states[id]
			if s == nil {
				s = New(id)
				states[id] = s
			}
			if resp.Jobspec != nil {
				if err := s.SetJobspec(resp.Jobspec); err != nil {
					b.Fatal(err)
				}
			}
			for _, ev := range resp.Events {
				if ev.Name == "alloc" && resp.R != nil {
					if err := s.SetR(resp.R); err != nil {
						b.Fatal(err)
					}
				}
				if err := s.Apply(ev); err != nil {
					b.Fatal(err)
				}
				snap := s.Snapshot()
				sink = snap.State
				events++
			}
		}
		if len(states) != 2000 {
			b.Fatalf("%d jobs, want 2000", len(states))
		}
	}
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
}

var sink string
