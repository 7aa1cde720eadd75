package host_test

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// impl is one plugin implementation under the conformance suite.
type impl struct {
	name string
	// plugin returns an executable for the example; env variables set
	// the misbehaviours of the variants (see testdata).
	plugin func(t *testing.T, dir string) string
	// variant is the example made to misbehave through FXS_VARIANT_*.
	variant func(t *testing.T, dir string) string
}

func goImpl() impl {
	var once sync.Once
	var bins struct{ example, variant string }
	build := func(t *testing.T) {
		once.Do(func() {
			dir := os.Getenv("FXS_TEST_BIN_DIR") // set by TestMain
			bins.example = goBuild(t, dir, "./plugins/examples/webhook/cmd/fluxstream-sink-webhook", "webhook")
			bins.variant = goBuild(t, dir, "./plugins/host/testdata/variant", "variant")
		})
		if bins.example == "" {
			t.Fatal("building the Go plugins failed earlier")
		}
	}
	copyTo := func(t *testing.T, src, dir, name string) string {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(dir, name)
		if err := os.WriteFile(dst, b, 0o755); err != nil {
			t.Fatal(err)
		}
		return dst
	}
	return impl{
		name: "go",
		plugin: func(t *testing.T, dir string) string {
			build(t)
			return copyTo(t, bins.example, dir, "webhook")
		},
		variant: func(t *testing.T, dir string) string {
			build(t)
			return copyTo(t, bins.variant, dir, "variant")
		},
	}
}

func pythonImpl() impl {
	examples := func(t *testing.T) string { return filepath.Join(repoRoot(t), "plugins", "sdk", "python", "examples") }
	return impl{
		name: "python",
		plugin: func(t *testing.T, dir string) string {
			return pythonPlugin(t, dir, "webhook.sh", filepath.Join(examples(t), "webhook_sink.py"))
		},
		variant: func(t *testing.T, dir string) string {
			return pythonPlugin(t, dir, "variant.sh", filepath.Join(repoRoot(t), "plugins", "host", "testdata", "variant.py"))
		},
	}
}

func TestConformance(t *testing.T) {
	for _, im := range []impl{goImpl(), pythonImpl()} {
		t.Run(im.name, func(t *testing.T) {
			t.Run("normal", func(t *testing.T) { testNormal(t, im) })
			t.Run("kill9-plugin", func(t *testing.T) { testKillPlugin(t, im) })
			t.Run("panic", func(t *testing.T) { testPanic(t, im) })
			t.Run("per-record-errors", func(t *testing.T) { testPerRecord(t, im) })
			t.Run("wrong-checksum", func(t *testing.T) { testWrongChecksum(t, im) })
			t.Run("other-protocol-version", func(t *testing.T) { testOtherProtocol(t, im) })
			t.Run("junk-on-stdout", func(t *testing.T) { testJunk(t, im) })
			t.Run("stdout-guard", func(t *testing.T) { testStdoutGuard(t, im) })
			t.Run("hang", func(t *testing.T) { testHang(t, im) })
			t.Run("kill9-fluxstream", func(t *testing.T) { testKillHost(t, im) })
		})
	}
}

// checkAll asserts every id of the source was acknowledged by the
// destination at least once, and returns how many POSTs carried each.
func checkAll(t *testing.T, h *hook, n int) map[string]int {
	t.Helper()
	posts, okd := h.counts()
	var missing []string
	for _, id := range ids("gen", n) {
		if okd[id] == 0 {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("%d of %d records never delivered, e.g. %v", len(missing), n, missing[:min(5, len(missing))])
	}
	if len(okd) != n {
		t.Fatalf("the destination has %d distinct ids, want %d", len(okd), n)
	}
	return posts
}

func testNormal(t *testing.T, im impl) {
	dir := t.TempDir()
	path := im.plugin(t, dir)
	h := newHook(t)
	const n = 2000
	pl := newPipeline(t, n, sinkYAML(path, sha(t, path), h.URL(), ""))
	if err := pl.run(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	posts := checkAll(t, h, n)
	for id, c := range posts {
		if c != 1 {
			t.Errorf("record %s posted %d times in a normal run, want once", id, c)
		}
	}
	if st := pl.sink.Status(); st.Starts != 1 || st.Failures != 0 {
		t.Errorf("status after a normal run: %+v, want one start and no failures", st)
	}
	if !strings.Contains(pl.log.String(), "plugin started") {
		t.Errorf("no 'plugin started' line in the log:\n%s", pl.log)
	}
}

func testKillPlugin(t *testing.T, im impl) {
	dir := t.TempDir()
	path := im.plugin(t, dir)
	h := newHook(t)
	const n = 3000
	pl := newPipeline(t, n, sinkYAML(path, sha(t, path), h.URL(), ""))
	// Kill the plugin with SIGKILL while it is in the middle of the 5th
	// and the 20th request: the destination got the records, the answer
	// never reaches fluxstream.
	var mu sync.Mutex
	var killed []int
	h.hold = func(req int) <-chan struct{} {
		if req != 5 && req != 20 {
			return nil
		}
		pid := pl.sink.Status().PID
		if pid == 0 {
			t.Errorf("request %d: no plugin pid", req)
			return nil
		}
		mu.Lock()
		killed = append(killed, pid)
		mu.Unlock()
		syscall.Kill(pid, syscall.SIGKILL)
		ch := make(chan struct{})
		go func() {
			for pidAlive(pid) {
				time.Sleep(5 * time.Millisecond)
			}
			close(ch)
		}()
		return ch
	}
	if err := pl.run(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	checkAll(t, h, n)
	mu.Lock()
	defer mu.Unlock()
	if len(killed) != 2 {
		t.Fatalf("killed %d plugin processes, want 2", len(killed))
	}
	if st := pl.sink.Status(); st.Starts != 3 {
		t.Errorf("plugin started %d times, want 3 (after two kills)", st.Starts)
	}
	if !regexp.MustCompile(`died during a write \(signal: killed`).MatchString(pl.log.String()) {
		t.Errorf("the log does not say the plugin was killed:\n%s", pl.log)
	}
}

func testPanic(t *testing.T, im impl) {
	if im.name == "python" {
		// A Python exception in write is a retry, not a crash (the SDK
		// catches it); a dying interpreter is the kill -9 case.
		t.Skip("no panics in Python: exceptions are answered as retry")
	}
	dir := t.TempDir()
	path := im.variant(t, dir)
	h := newHook(t)
	const n = 500
	pl := newPipeline(t, n, sinkYAML(path, sha(t, path), h.URL(), "    env: {FXS_VARIANT_PANIC: \"3\"}\n"))
	if err := pl.run(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	checkAll(t, h, n)
	log := pl.log.String()
	if !strings.Contains(log, "panic: variant: panic in write 3") {
		t.Errorf("the plugin's panic is not in the log:\n%s", log)
	}
	if !strings.Contains(log, "exit status 2") {
		t.Errorf("the log does not say how the plugin exited:\n%s", log)
	}
}

func testPerRecord(t *testing.T, im impl) {
	dir := t.TempDir()
	path := im.plugin(t, dir)
	h := newHook(t)
	const n = 400
	refused := map[string]bool{"gen:7": true, "gen:133": true, "gen:399": true}
	flaky := map[string]int{"gen:21": 2, "gen:250": 1} // fails this many times, then ok
	var mu sync.Mutex
	h.decide = func(_ int, batch []string) (int, string) {
		mu.Lock()
		defer mu.Unlock()
		var lines []string
		for _, id := range batch {
			switch {
			case refused[id]:
				lines = append(lines, fmt.Sprintf(`{"id":%q,"status":422,"reason":"no such queue"}`, id))
			case flaky[id] > 0:
				flaky[id]--
				lines = append(lines, fmt.Sprintf(`{"id":%q,"status":503,"reason":"index busy"}`, id))
			}
		}
		if len(lines) == 0 {
			return 200, ""
		}
		return 207, strings.Join(lines, "\n")
	}
	pl := newPipeline(t, n, sinkYAML(path, sha(t, path), h.URL(), ""))
	if err := pl.run(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	posts, okd := h.counts()
	for _, id := range ids("gen", n) {
		want := 1
		switch {
		case id == "gen:21":
			want = 3
		case id == "gen:250":
			want = 2
		}
		if posts[id] != want {
			t.Errorf("record %s posted %d times, want %d", id, posts[id], want)
		}
		if refused[id] != (okd[id] == 0) {
			t.Errorf("record %s: delivered %d times (refused: %v)", id, okd[id], refused[id])
		}
	}
	dl := deadLettered(t, pl.dir, "out")
	if len(dl) != len(refused) {
		t.Errorf("dead-lettered %v, want exactly %v", dl, refused)
	}
	for id := range refused {
		if !strings.Contains(dl[id], "HTTP 422: no such queue") {
			t.Errorf("dead letter of %s: reason %q, want the destination's", id, dl[id])
		}
	}
}

func testWrongChecksum(t *testing.T, im impl) {
	dir := t.TempDir()
	path := im.plugin(t, dir)
	h := newHook(t)
	good := sha(t, path)
	bad := strings.Repeat("ab", 32)
	pl := newPipeline(t, 10, sinkYAML(path, bad, h.URL(), ""))
	err := pl.run(30 * time.Second)
	if err == nil {
		t.Fatal("a plugin with the wrong digest started")
	}
	for _, want := range []string{"sha256 mismatch", bad, good, path} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not hold %q", err, want)
		}
	}
	if posts, _ := h.counts(); len(posts) != 0 {
		t.Errorf("the destination got records: %v", posts)
	}
}

func testOtherProtocol(t *testing.T, im impl) {
	dir := t.TempDir()
	path := im.variant(t, dir)
	h := newHook(t)
	pl := newPipeline(t, 10, sinkYAML(path, sha(t, path), h.URL(), "    env: {FXS_VARIANT_PROTOCOL: \"2\"}\n"))
	err := pl.run(30 * time.Second)
	want := "other protocol version: the plugin speaks fluxstream plugin protocol 2, this fluxstream speaks 1"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v, want an error with %q", err, want)
	}
}

func testJunk(t *testing.T, im impl) {
	dir := t.TempDir()
	real := im.plugin(t, dir)
	// The usual culprit: a wrapper script that chats before it execs.
	path := script(t, dir, "wrapper.sh", fmt.Sprintf("echo 'setting up the environment...'\nexec %q \"$@\"\n", real))
	h := newHook(t)
	pl := newPipeline(t, 10, sinkYAML(path, sha(t, path), h.URL(), ""))
	err := pl.run(30 * time.Second)
	want := `junk on stdout: the plugin printed "setting up the environment..." before the handshake line`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("got %v, want an error with %q", err, want)
	}
}

// testStdoutGuard: what the plugin's own code prints on stdout (before
// and after the handshake) cannot break it, and reaches the log.
func testStdoutGuard(t *testing.T, im impl) {
	dir := t.TempDir()
	path := im.variant(t, dir)
	h := newHook(t)
	const n = 200
	pl := newPipeline(t, n, sinkYAML(path, sha(t, path), h.URL(), "    env: {FXS_VARIANT_CHATTY: \"1\"}\n"))
	if err := pl.run(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	checkAll(t, h, n)
	log := pl.log.String()
	for _, want := range []string{"chatty plugin: hello from init, on stdout", "chatty plugin: writing 50 records, on stdout"} {
		if !strings.Contains(log, want) {
			t.Errorf("the log lacks the plugin's %q:\n%s", want, log)
		}
	}
	if !regexp.MustCompile(`sink=out plugin=variant\S* .*chatty plugin`).MatchString(log) {
		t.Errorf("the plugin's output is not labelled with the node:\n%s", log)
	}
}

func testHang(t *testing.T, im impl) {
	dir := t.TempDir()
	path := im.plugin(t, dir)
	h := newHook(t)
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	h.hold = func(req int) <-chan struct{} {
		if req == 3 {
			return release // never answered while the test runs
		}
		return nil
	}
	const n = 500
	// The plugin's own timeout is an hour: it hangs, fluxstream must not.
	pl := newPipeline(t, n, strings.Replace(sinkYAML(path, sha(t, path), h.URL(), "      timeout: 3600s\n"),
		"write_timeout: 2s", "write_timeout: 500ms", 1))
	if err := pl.run(60 * time.Second); err != nil {
		t.Fatal(err)
	}
	checkAll(t, h, n)
	if !strings.Contains(pl.log.String(), "did not answer a write of 50 records within write_timeout 500ms: killed it") {
		t.Errorf("the log does not say the hung plugin was killed:\n%s", pl.log)
	}
	if st := pl.sink.Status(); st.Starts != 2 {
		t.Errorf("plugin started %d times, want 2", st.Starts)
	}
}

// pidAlive reports whether pid runs (a zombie counts as gone).
func pidAlive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return !os.IsNotExist(err)
	}
	s := string(b)
	if i := strings.LastIndexByte(s, ')'); i >= 0 && i+2 < len(s) {
		return s[i+2] != 'Z'
	}
	return true
}
