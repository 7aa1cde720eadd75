package users

import (
	"os/exec"
	"testing"
	"time"
)

func TestRootResolves(t *testing.T) {
	for _, mode := range []string{ModeFiles, ModeGetent} {
		if mode == ModeGetent {
			if _, err := exec.LookPath("getent"); err != nil {
				t.Log("getent not installed: getent mode falls back to files")
			}
		}
		if got := New(mode).Name(0); got != "root" {
			t.Errorf("%s: Name(0) = %q, want root", mode, got)
		}
	}
	if got := New(ModeNone).Name(0); got != "" {
		t.Errorf("none: Name(0) = %q", got)
	}
	// 4294967294 is nobody's uid on no system we run on.
	if got := New(ModeGetent).Name(4294967290); got != "" {
		t.Errorf("unknown uid resolved to %q", got)
	}
}

func TestCacheAndExpiry(t *testing.T) {
	r := New(ModeNone)
	calls := 0
	r.lookupFn = func(uid uint32) (string, bool) {
		calls++
		if uid == 6001 {
			return "fluxuser", true
		}
		return "", false
	}
	now := time.Unix(1795394500, 0)
	r.now = func() time.Time { return now }
	for range 3 {
		if got := r.Name(6001); got != "fluxuser" {
			t.Fatalf("Name = %q", got)
		}
		r.Name(7)
	}
	if calls != 2 {
		t.Fatalf("lookups = %d, want 2 (cached)", calls)
	}
	now = now.Add(6 * time.Minute) // negative entry expired, positive not
	r.Name(6001)
	r.Name(7)
	if calls != 3 {
		t.Fatalf("lookups = %d, want 3", calls)
	}
	now = now.Add(time.Hour)
	r.Name(6001)
	if calls != 4 {
		t.Fatalf("lookups = %d, want 4", calls)
	}
	var nilR *Resolver
	if nilR.Name(1) != "" {
		t.Fatal("nil resolver resolved")
	}
}
