package host_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBadReplies: answers that break the protocol are errors naming the
// plugin, the batch is retried, nothing is acknowledged that the plugin
// did not answer for correctly, and fluxstream does not crash.
func TestBadReplies(t *testing.T) {
	bin := goBuild(t, t.TempDir(), "./plugins/host/testdata/badreply", "badreply")
	for _, tc := range []struct{ mode, want string }{
		{"short", "broke the protocol: 49 statuses for 50 records"},
		{"long", "broke the protocol: 51 statuses for 50 records"},
		{"unknown", "broke the protocol: unknown status 7 for record"},
		{"huge", "write failed: rpc error: code = ResourceExhausted"},
	} {
		t.Run(tc.mode, func(t *testing.T) {
			dir := t.TempDir()
			answered := filepath.Join(dir, "answered")
			extra := "    env: {FXS_BAD: " + tc.mode + ", FXS_BAD_LOG: " + answered + "}\n    max_message_bytes: 1MiB\n"
			const n = 300
			pl := newPipeline(t, n, sinkYAML(bin, sha(t, bin), "http://unused.invalid/", extra))
			if err := pl.run(60 * time.Second); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(answered)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]bool{}
			for _, id := range strings.Fields(string(b)) {
				got[id] = true
			}
			for _, id := range ids("gen", n) {
				if !got[id] {
					t.Errorf("record %s was never answered correctly, yet the run ended: acknowledged on a bad answer", id)
				}
			}
			log := pl.log.String()
			if !strings.Contains(log, "plugin "+bin+" "+strings.TrimPrefix(tc.want, "")) && !strings.Contains(log, tc.want) {
				t.Errorf("the log does not hold %q:\n%s", tc.want, log)
			}
			if !strings.Contains(log, bin) {
				t.Errorf("the errors do not name the plugin %s", bin)
			}
			if st := pl.sink.Status(); st.Starts != 1 {
				t.Errorf("plugin started %d times: a bad answer is not a reason to restart it", st.Starts)
			}
		})
	}
}
