// Package crosscheck decides what a test does when an independent client
// it cross-checks against (kcat, Apache Avro for Python, ...) is missing:
// on a developer's machine it skips; in CI, which installs them, it fails,
// so a cross-check can never be skipped there unnoticed.
package crosscheck

import (
	"os"
	"os/exec"
	"testing"
)

// EnvRequired names the variable .ci/run sets: every cross-check tool must
// be there.
const EnvRequired = "FLUXSTREAM_CROSSCHECKS"

// Need skips t (or fails it in CI) unless probe succeeds. what names the
// tool and how to get it.
func Need(t testing.TB, what string, probe func() error) {
	t.Helper()
	err := probe()
	if err == nil {
		return
	}
	if os.Getenv(EnvRequired) == "required" {
		t.Fatalf("%s is required here (%s=required) but missing: %v", what, EnvRequired, err)
	}
	t.Skipf("%s not available (%v); .ci/run installs it", what, err)
}

// Command is a probe: the program is on PATH.
func Command(name string) func() error {
	return func() error {
		_, err := exec.LookPath(name)
		return err
	}
}

// Run is a probe: the command runs and exits 0.
func Run(name string, args ...string) func() error {
	return func() error { return exec.Command(name, args...).Run() }
}
