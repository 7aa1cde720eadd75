package host_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"

	"github.com/fluxstream/fluxstream/plugins/internal/wire"
)

// TestPythonWireMatchesGo: the Python SDK repeats the handshake constants.
func TestPythonWireMatchesGo(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "plugins", "sdk", "python", "fluxstream_plugin", "_wire.py"))
	if err != nil {
		t.Fatal(err)
	}
	get := func(name string) string {
		m := regexp.MustCompile(`(?m)^` + name + ` = "?([^"\n]*)"?$`).FindSubmatch(b)
		if m == nil {
			t.Fatalf("_wire.py has no %s", name)
		}
		return string(m[1])
	}
	for name, want := range map[string]string{
		"PROTOCOL_VERSION":   strconv.Itoa(int(wire.ProtocolVersion)),
		"MAGIC_COOKIE_KEY":   wire.MagicCookieKey,
		"MAGIC_COOKIE_VALUE": wire.MagicCookieValue,
		"ENV_HOST_PID":       wire.EnvHostPID,
		"MAX_MESSAGE_BYTES":  "64 << 20",
	} {
		if got := get(name); got != want {
			t.Errorf("_wire.py %s = %s, Go has %s", name, got, want)
		}
	}
	if wire.MaxMessageBytes != 64<<20 {
		t.Errorf("Go MaxMessageBytes changed: update _wire.py and this test")
	}
}
