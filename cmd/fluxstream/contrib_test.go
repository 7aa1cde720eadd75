package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The system-instance config validates on a machine without its secret
// (a warning names the file) and without Flux.
func TestContribSystemConfigValidates(t *testing.T) {
	code, _, stderr := runCLI(t, "validate", "-c", "../../contrib/systemd/config.yaml")
	if code != 0 {
		t.Fatalf("validate: exit %d:\n%s", code, stderr)
	}
	if !strings.Contains(stderr, "/etc/fluxstream/kafka-password") {
		t.Errorf("no warning about the missing secret file:\n%s", stderr)
	}
}

// systemd accepts the unit: every directive known, the commands exist
// (pointed at a built binary), and its ExecStart runs a config that
// validates.
func TestContribSystemdUnit(t *testing.T) {
	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze not installed")
	}
	unit, err := os.ReadFile("../../contrib/systemd/fluxstream.service")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"User=flux", "StateDirectory=fluxstream", "ExecReload=/bin/kill -HUP $MAINPID", "RestartPreventExitStatus=2", "ProtectSystem=strict", "NoNewPrivileges=yes"} {
		if !strings.Contains(string(unit), want+"\n") {
			t.Errorf("the unit lacks %s", want)
		}
	}
	dir := t.TempDir()
	self, _ := os.Executable()
	bin := filepath.Join(dir, "fluxstream")
	if err := os.Symlink(self, bin); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "fluxstream.service")
	os.WriteFile(path, []byte(strings.ReplaceAll(string(unit), "/usr/local/bin/fluxstream", bin)), 0o644)
	out, err := exec.Command(analyze, "verify", "--man=no", path).CombinedOutput()
	// verify complains about units it cannot see on this machine
	// (flux.service); anything about our own file is a failure.
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "fluxstream.service:") {
			t.Errorf("systemd-analyze: %s", l)
		}
	}
	if err != nil && !strings.Contains(string(out), "flux.service") {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}
