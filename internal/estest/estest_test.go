package estest

import (
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

func TestMain(m *testing.M) {
	if os.Getenv("ESTEST_CHILD") == "1" {
		// A second test process: it must find the node the parent started.
		n := Start(childTB{})
		os.Stdout.WriteString("pid=" + strconv.Itoa(n.PID) + " started=" + strconv.FormatBool(n.Started) + "\n")
		Release()
		os.Exit(0)
	}
	os.Exit(Main(m))
}

// childTB is just enough of testing.TB for Start outside a test.
type childTB struct{ testing.TB }

func (childTB) Helper()                   {}
func (childTB) Logf(string, ...any)       {}
func (childTB) Skipf(f string, a ...any)  { panic("skip") }
func (childTB) Fatalf(f string, a ...any) { panic(f) }
func (childTB) Cleanup(func())            {}
func (childTB) Name() string              { return "child" }

func TestSharedNode(t *testing.T) {
	n := Start(t)
	var info struct {
		Version struct {
			Distribution string `json:"distribution"`
			Number       string `json:"number"`
		} `json:"version"`
	}
	if err := n.Do(context.Background(), "GET", "/", nil, &info); err != nil {
		t.Fatal(err)
	}
	if info.Version.Distribution != "opensearch" || !strings.HasPrefix(info.Version.Number, "2.19.") {
		t.Fatalf("node is %+v, want opensearch 2.19.x", info.Version)
	}
	if !strings.HasPrefix(n.URL, "http://127.0.0.1:") {
		t.Fatalf("node listens on %s, want loopback", n.URL)
	}
	// A second process reuses it instead of starting its own.
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^$")
	cmd.Env = append(os.Environ(), "ESTEST_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	want := "pid=" + strconv.Itoa(n.PID) + " started=false"
	if !strings.Contains(string(out), want) {
		t.Fatalf("child said %q, want %q", out, want)
	}
	// The child's release did not stop the node: our lease holds it.
	if !alive(n.PID) {
		t.Fatal("node stopped when the child released it")
	}
	if err := ping(n.URL); err != nil {
		t.Fatal(err)
	}
}
