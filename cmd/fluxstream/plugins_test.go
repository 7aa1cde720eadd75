package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// pluginBin builds a Go program of the module into a t.TempDir().
func pluginBin(t *testing.T, pkg string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), filepath.Base(pkg))
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = "../.."
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, b)
	}
	return out
}

func TestPluginsCheck(t *testing.T) {
	webhook := pluginBin(t, "./plugins/examples/webhook/cmd/fluxstream-sink-webhook")
	variant := pluginBin(t, "./plugins/host/testdata/variant")
	dir := t.TempDir()
	junk := filepath.Join(dir, "junk.sh")
	if err := os.WriteFile(junk, []byte(fmt.Sprintf("#!/bin/sh\necho 'Loading modules...'\nexec %s\n", webhook)), 0o755); err != nil {
		t.Fatal(err)
	}
	sum := sha256File(t, webhook)
	for _, tc := range []struct {
		name string
		path string
		env  string
		code int
		want string // the one line, a regexp
	}{
		{"ok", webhook, "", 0, `^` + regexp.QuoteMeta(webhook) + `: ok: webhook 1\.0\.0, plugin protocol 1, gRPC with mTLS; sha256: ` + sum + `$`},
		{"wrong magic cookie", pluginBin(t, "./plugins/host/testdata/othercookie"), "", 1,
			`: NOT A WORKING PLUGIN: wrong magic cookie: the program exited without a handshake because it expects another program's cookie, not FLUXSTREAM_PLUGIN=`},
		{"other protocol version", variant, "FXS_VARIANT_PROTOCOL=3", 1,
			`: NOT A WORKING PLUGIN: other protocol version: the plugin speaks fluxstream plugin protocol 3, this fluxstream speaks 1; rebuild`},
		{"junk on stdout", junk, "", 1,
			`junk\.sh: NOT A WORKING PLUGIN: junk on stdout: the plugin printed "Loading modules\.\.\." before the handshake line`},
		{"no gRPC", pluginBin(t, "./plugins/host/testdata/netrpc"), "", 1,
			`: NOT A WORKING PLUGIN: no gRPC: the plugin serves "netrpc", fluxstream plugins must serve gRPC`},
		{"not a program", filepath.Join(dir, "missing"), "", 1, `missing: .*no such file or directory`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if k, v, ok := strings.Cut(tc.env, "="); ok {
				t.Setenv(k, v)
			}
			code, out, errOut := runCLI(t, "plugins", "check", tc.path)
			text := strings.TrimSpace(out + errOut)
			if code != tc.code {
				t.Errorf("exit %d, want %d; output:\n%s", code, tc.code, text)
			}
			if strings.Count(text, "\n") != 0 {
				t.Errorf("want one line, got:\n%s", text)
			}
			if !regexp.MustCompile(tc.want).MatchString(text) {
				t.Errorf("got %q\nwant it to match %q", text, tc.want)
			}
		})
	}
}

func TestPluginsList(t *testing.T) {
	webhook := pluginBin(t, "./plugins/examples/webhook/cmd/fluxstream-sink-webhook")
	dir := t.TempDir()
	config := writeFile(t, dir, "config.yaml", fmt.Sprintf(`
data_dir: %[1]s/state
sources:
  journal:
    type: replay
    path: embedded:scenario
sinks:
  hook:
    type: plugin
    inputs: [journal]
    path: %[2]s
    sha256: %[3]s
    config:
      url: http://127.0.0.1:1/hook
  badhook:
    type: plugin
    inputs: [journal]
    path: %[2]s
    sha256: %[3]s
    config:
      url: ftp://example.org/
      colour: blue
  records:
    type: file
    inputs: [journal]
    path: %[1]s/records.jsonl
`, dir, webhook, sha256File(t, webhook)))
	code, out, errOut := runCLI(t, "plugins", "-v", "-c", config)
	if code != exitFail {
		t.Errorf("exit %d, want %d (one plugin refuses its config, one is unhealthy)", code, exitFail)
	}
	for _, want := range []string{
		// badhook: its config errors, with their keys, in one line
		`badhook: ` + regexp.QuoteMeta(webhook) + `: FAILED: .*sinks\.badhook\.config\.colour: plugin webhook says: unknown key`,
		`(?m)^hook: webhook 1\.0\.0 \(protocol 1\) ` + regexp.QuoteMeta(webhook) + `$`,
		`(?m)^  POSTs batches of records as NDJSON to a URL$`,
		`(?m)^  health: NOT OK: .*127\.0\.0\.1:1.*connection refused`,
		`(?m)^  config schema: \{.*"required":\["url"\]`,
	} {
		if !regexp.MustCompile(want).MatchString(out) {
			t.Errorf("output lacks %q:\n%s\nstderr:\n%s", want, out, errOut)
		}
	}
	if regexp.MustCompile(`(?m)^records`).MatchString(out) {
		t.Errorf("the file sink is listed as a plugin:\n%s", out)
	}
}

func sha256File(t *testing.T, path string) string {
	t.Helper()
	out, err := exec.Command("sha256sum", path).Output()
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(out))[0]
}
