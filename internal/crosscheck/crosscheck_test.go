package crosscheck

import (
	"errors"
	"testing"
)

type recorder struct {
	testing.TB
	skipped, failed bool
}

func (r *recorder) Helper()               {}
func (r *recorder) Skipf(string, ...any)  { r.skipped = true }
func (r *recorder) Fatalf(string, ...any) { r.failed = true }
func missing() error                      { return errors.New("not found") }

func TestNeed(t *testing.T) {
	t.Setenv(EnvRequired, "")
	r := &recorder{TB: t}
	Need(r, "tool", missing)
	if !r.skipped || r.failed {
		t.Fatalf("outside CI a missing tool skips: %+v", r)
	}
	t.Setenv(EnvRequired, "required")
	r = &recorder{TB: t}
	Need(r, "tool", missing)
	if !r.failed {
		t.Fatalf("in CI a missing tool fails: %+v", r)
	}
	r = &recorder{TB: t}
	Need(r, "tool", func() error { return nil })
	if r.failed || r.skipped {
		t.Fatalf("a present tool neither skips nor fails: %+v", r)
	}
}
