package core

import (
	"testing"
	"time"
)

// Push-time marks: one a second at most, the oldest undelivered seq maps
// to the mark that covers it, delivered marks are let go.
func TestAgeMarks(t *testing.T) {
	var a ageMarks
	t0 := time.Unix(1000, 0)
	if got := a.oldest(0, 0); !got.IsZero() {
		t.Errorf("empty: %v", got)
	}
	a.pushed(0, 10, t0)                           // seqs 0..9 at t0
	a.pushed(0, 20, t0.Add(500*time.Millisecond)) // same second: same mark
	a.pushed(0, 30, t0.Add(2*time.Second))        // 20..29 at t0+2s
	a.pushed(0, 25, t0.Add(3*time.Second))        // an older view: nothing new
	a.pushed(5, 40, t0.Add(4*time.Second))        // 30..39 at t0+4s
	if len(a.marks) != 3 {
		t.Fatalf("marks %+v, want 3", a.marks)
	}
	for _, c := range []struct {
		acked uint64
		want  time.Time
	}{
		{5, t0}, {19, t0}, {20, t0.Add(2 * time.Second)}, {29, t0.Add(2 * time.Second)}, {30, t0.Add(4 * time.Second)},
	} {
		if got := a.oldest(c.acked, 40); !got.Equal(c.want) {
			t.Errorf("oldest(%d) = %v, want %v", c.acked, got, c.want)
		}
	}
	if len(a.marks) != 1 {
		t.Errorf("after acked 30: marks %+v, want only the last", a.marks)
	}
	if got := a.oldest(40, 40); !got.IsZero() || len(a.marks) != 0 {
		t.Errorf("all delivered: %v, marks %+v", got, a.marks)
	}
	a.pushed(40, 41, t0.Add(10*time.Second))
	if got := a.oldest(40, 41); !got.Equal(t0.Add(10 * time.Second)) {
		t.Errorf("after a new push: %v", got)
	}
}
