package host_test

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/core/coretest"
	"github.com/fluxstream/fluxstream/plugins/host"
)

// TestMain builds the Go plugins once per test binary, into a directory
// removed at the end (tests copy them into their own t.TempDir), and runs
// the stand-in fluxstream process of the kill -9 test when asked to.
func TestMain(m *testing.M) {
	if cfg := os.Getenv("FXS_HOST_HELPER_CONFIG"); cfg != "" {
		os.Exit(hostHelper(cfg))
	}
	dir, err := os.MkdirTemp("", "fxs-plugins-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Setenv("FXS_TEST_BIN_DIR", dir)
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// hostHelper runs a pipeline from a config file, like `fluxstream run`,
// printing PLUGIN_PID=N once the plugin runs. It stops on SIGTERM (or
// dies on SIGKILL, which is the point).
func hostHelper(config string) int {
	b, err := os.ReadFile(config)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cfg, err := core.LoadConfig(config, b, core.LoadOptions{Environ: []string{}})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	g, err := core.Build(cfg, registry())
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer cancel()
	p := core.NewPipeline(g, core.RunOptions{Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	go reportPID(g)
	if err := p.Run(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

func reportPID(g *core.Graph) {
	for {
		for _, n := range g.Sinks() {
			if s, ok := n.Impl.(*host.Sink); ok {
				if pid := s.Status().PID; pid != 0 {
					fmt.Printf("PLUGIN_PID=%d\n", pid)
					return
				}
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func testKillHost(t *testing.T, im impl) {
	dir := t.TempDir()
	path := im.plugin(t, dir)
	h := newHook(t)
	config := fmt.Sprintf(`
data_dir: %s/state
sources:
  gen:
    type: gen
    count: 0
    batch: 10
sinks:%s`, dir, sinkYAML(path, sha(t, path), h.URL(), ""))
	cfgPath := dir + "/config.yaml"
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), "FXS_HOST_HELPER_CONFIG="+cfgPath)
	var stderr coretest.SyncBuffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	pidc := make(chan int, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "PLUGIN_PID="); ok {
				pid, _ := strconv.Atoi(v)
				pidc <- pid
			}
		}
	}()
	var pid int
	select {
	case pid = <-pidc:
	case <-time.After(30 * time.Second):
		t.Fatalf("the host never reported a plugin pid; its log:\n%s", stderr.String())
	}
	// Records flow before the kill.
	eventually(t, 30*time.Second, "records reach the destination", func() bool {
		_, okd := h.counts()
		return len(okd) >= 50
	})
	if !pidAlive(pid) {
		t.Fatalf("plugin %d is not running", pid)
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait()
	eventually(t, 10*time.Second, fmt.Sprintf("plugin %d exits after its host was killed", pid), func() bool { return !pidAlive(pid) })
}
