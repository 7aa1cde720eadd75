package kafka

import (
	"log/slog"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fluxstream/fluxstream/core"
)

func msgs(topic string, part int32, from, to int64) []*kgo.Record {
	var out []*kgo.Record
	for o := from; o <= to; o++ {
		out = append(out, &kgo.Record{Topic: topic, Partition: part, Offset: o, LeaderEpoch: 3})
	}
	return out
}

func recsFor(ms []*kgo.Record) []*core.Record {
	out := make([]*core.Record, len(ms))
	for i := range ms {
		out[i] = &core.Record{Kind: core.KindEvent, ID: "x"}
	}
	return out
}

// Only the contiguous prefix of acknowledged batches is committed, per
// partition; a batch acked out of order waits for the ones before it;
// records of a partition not (or no longer) owned are not emitted, and a
// revoked partition's late acks commit nothing.
func TestCommitOnlyAckedPrefix(t *testing.T) {
	s := &Source{parts: map[tp]*partition{}, commitReq: make(chan struct{}, 1), log: slog.New(slog.DiscardHandler)}
	s.assigned(nil, nil, map[string][]int32{"t": {0, 1}})
	track := func(ms []*kgo.Record) []trackedSpan {
		spans, kept := s.track(ms, recsFor(ms))
		if len(kept) != len(ms) {
			t.Fatalf("kept %d of %d", len(kept), len(ms))
		}
		return spans
	}
	a := track(append(msgs("t", 0, 0, 9), msgs("t", 1, 0, 4)...))
	b := track(msgs("t", 0, 10, 19))
	c := track(append(msgs("t", 0, 20, 29), msgs("t", 1, 5, 5)...))
	want := func(step string, exp map[int32]int64) {
		t.Helper()
		got := s.pendingOffsets()["t"]
		if len(got) != len(exp) {
			t.Fatalf("%s: commits %v, want %v", step, got, exp)
		}
		for p, o := range exp {
			if got[p].Offset != o || got[p].Epoch != 3 {
				t.Fatalf("%s: partition %d commits %+v, want offset %d epoch 3", step, p, got[p], o)
			}
		}
	}
	want("nothing acked", nil)
	s.acked(b)
	want("b acked before a", nil)
	s.acked(a)
	want("a acked", map[int32]int64{0: 20, 1: 5})
	want("nothing new", nil)

	// Partition 1 is revoked with c in flight; c's ack then commits
	// partition 0 only.
	s.lost(nil, nil, map[string][]int32{"t": {1}})
	s.acked(c)
	want("c acked after partition 1 left", map[int32]int64{0: 30})

	// A poll's records of a partition no longer owned are dropped.
	ms := append(msgs("t", 1, 6, 8), msgs("t", 0, 30, 30)...)
	_, kept := s.track(ms, recsFor(ms))
	if len(kept) != 1 {
		t.Fatalf("kept %d records, want the one of partition 0", len(kept))
	}
}

// A commit that failed is not forgotten: its partitions are dirty again
// (unless a newer offset is already pending) and the commit loop is
// asked to try again.
func TestFailedCommitIsRetried(t *testing.T) {
	s := &Source{parts: map[tp]*partition{}, commitReq: make(chan struct{}, 1), log: slog.New(slog.DiscardHandler)}
	s.assigned(nil, nil, map[string][]int32{"t": {0, 1}})
	tried := kgo.EpochOffset{Epoch: 3, Offset: 10}
	for _, p := range []int32{0, 1} {
		pt := s.parts[tp{"t", p}]
		pt.commit, pt.committed, pt.dirty = tried, tried, false
	}
	s.parts[tp{"t", 1}].committed = kgo.EpochOffset{Epoch: 3, Offset: 20} // a newer commit went out since
	s.recommit(map[string]map[int32]kgo.EpochOffset{"t": {0: tried, 1: tried}})
	if !s.parts[tp{"t", 0}].dirty || s.parts[tp{"t", 1}].dirty {
		t.Fatalf("dirty after a failed commit: p0 %v (want true), p1 %v (want false)", s.parts[tp{"t", 0}].dirty, s.parts[tp{"t", 1}].dirty)
	}
	select {
	case <-s.commitReq:
	default:
		t.Fatal("the commit loop was not asked to try again")
	}
	if got := s.pendingOffsets(); got["t"][0] != tried || len(got["t"]) != 1 {
		t.Fatalf("pending after retry: %v", got)
	}
}
