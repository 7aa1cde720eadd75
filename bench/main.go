// Command bench measures fluxstream as a whole process against naive
// baselines on journals made from the bulk fixture (issue 21): it builds
// the binary once, generates the journals (cached), runs every workload
// paired and interleaved with its baseline, and prints one table with the
// targets and PASS/FAIL. See README.md.
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/fluxstream/fluxstream/internal/srtest"
)

const (
	smallCopies = 50  // 1.1M events, 100k jobs
	largeCopies = 500 // 11M events, 1M jobs
)

type options struct {
	quick  bool
	only   map[string]bool
	reps   int
	out    string
	python string
	keep   bool
	rev    string
	gen    bool
}

func main() {
	var o options
	only := flag.String("only", "", "run only these workloads (comma-separated: "+strings.Join(workloadKeys, ", ")+")")
	flag.BoolVar(&o.quick, "quick", false, "the 1.1M-event workloads only, one repetition")
	flag.IntVar(&o.reps, "reps", 3, "repetitions of each run (the table shows medians)")
	flag.StringVar(&o.out, "out", "", "also write the table as Markdown to this file")
	flag.StringVar(&o.python, "python", "/usr/bin/python3", "Python for the baselines (Debian's, with python3-confluent-kafka)")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory (configs, logs of every run)")
	flag.BoolVar(&o.gen, "gen", false, "only generate (and verify) the journals the other flags need, then exit")
	flag.StringVar(&o.rev, "rev", "", "build fluxstream from this git revision (git archive) instead of the working tree")
	flag.Parse()
	if o.quick && !isFlagSet("reps") {
		o.reps = 1
	}
	if o.reps < 1 {
		fatalf("-reps must be at least 1")
	}
	if *only != "" {
		o.only = map[string]bool{}
		for _, k := range strings.Split(*only, ",") {
			k = strings.TrimSpace(k)
			if !slices.Contains(workloadKeys, k) {
				fatalf("-only: unknown workload %q (%s)", k, strings.Join(workloadKeys, ", "))
			}
			o.only[k] = true
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := bench(ctx, o); err != nil {
		fatalf("%v", err)
	}
}

func isFlagSet(name string) bool {
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench: "+format+"\n", args...)
	os.Exit(1)
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// env is what every run shares.
type env struct {
	o        options
	root     string // module root
	work     string
	fluxBin  string
	kfakeBin string
	naivePy  string
	prodPy   string
	registry string // schema registry URL (in this process)
	small    journalInfo
	large    journalInfo
}

func bench(ctx context.Context, o options) error {
	e := &env{o: o}
	gomod, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil || strings.TrimSpace(string(gomod)) == "" {
		return fmt.Errorf("run from inside the fluxstream module (go env GOMOD: %v)", err)
	}
	e.root = filepath.Dir(strings.TrimSpace(string(gomod)))
	e.work, err = os.MkdirTemp("", "fluxstream-bench-")
	if err != nil {
		return err
	}
	if o.keep {
		logf("work directory %s (kept)", e.work)
	} else {
		defer os.RemoveAll(e.work)
	}
	load0 := loadavg()
	logf("load average %s; building", load0)
	e.fluxBin = filepath.Join(e.work, "bin", "fluxstream")
	e.kfakeBin = filepath.Join(e.work, "bin", "kfakebroker")
	src, ver := e.root, version(e.root)
	if o.rev != "" {
		// A tree of its own: the working tree may be mid-change.
		if src, ver, err = archive(ctx, e.root, o.rev, filepath.Join(e.work, "src")); err != nil {
			return err
		}
	}
	for _, b := range builds(o.gen, e) {
		cmd := exec.CommandContext(ctx, "go", "build", "-o", b[0], b[1])
		cmd.Dir = src
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go build %s: %v\n%s", b[1], err, out)
		}
	}
	if e.naivePy, err = writeScript(e.work, "naive.py", naivePy); err != nil {
		return err
	}
	if e.prodPy, err = writeScript(e.work, "producer.py", producerPy); err != nil {
		return err
	}
	reg := srtest.New()
	defer reg.Close()
	e.registry = reg.URL()

	cache, err := os.UserCacheDir()
	if err != nil {
		return err
	}
	cache = filepath.Join(cache, "fluxstream", "bench")
	fixture := filepath.Join(e.root, fixtureRel)
	wls := e.workloads()
	needLarge := false
	for _, w := range wls {
		needLarge = needLarge || w.large
	}
	if e.small, err = ensureJournal(ctx, cache, fixture, smallCopies, logf); err != nil {
		return err
	}
	if needLarge {
		if e.large, err = ensureJournal(ctx, cache, fixture, largeCopies, logf); err != nil {
			return err
		}
	}

	if o.gen {
		return nil
	}
	var t table
	for _, w := range wls {
		if err := ctx.Err(); err != nil {
			return err
		}
		e.runWorkload(ctx, w, &t)
	}
	load1 := loadavg()
	head := fmt.Sprintf("fluxstream %s, %s; %d core(s); load average %s at start, %s at the end; median of %d run(s) each",
		ver, time.Now().UTC().Format("2006-01-02 15:04 MST"), runtime.NumCPU(), load0, load1, o.reps)
	fmt.Println()
	fmt.Println(head)
	fmt.Println()
	fmt.Print(t.text())
	for _, n := range t.notes {
		fmt.Println(n)
	}
	if o.out != "" {
		md := head + "\n\n" + t.markdown()
		for _, n := range t.notes {
			md += "\n" + n + "\n"
		}
		if err := os.WriteFile(o.out, []byte(md), 0o644); err != nil {
			return err
		}
		logf("wrote %s", o.out)
	}
	return nil
}

func writeScript(dir, name string, body []byte) (string, error) {
	p := filepath.Join(dir, name)
	return p, os.WriteFile(p, body, 0o644)
}

// builds are the programs to build (none with -gen).
func builds(gen bool, e *env) [][2]string {
	if gen {
		return nil
	}
	return [][2]string{{e.fluxBin, "./cmd/fluxstream"}, {e.kfakeBin, "./internal/kafkatest/cmd/kfakebroker"}}
}

// archive extracts rev of the repository at root into dir.
func archive(ctx context.Context, root, rev, dir string) (string, string, error) {
	out, err := exec.CommandContext(ctx, "git", "-C", root, "rev-parse", "--short", rev+"^{commit}").Output()
	if err != nil {
		return "", "", fmt.Errorf("-rev %s: not a commit of %s", rev, root)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", err
	}
	cmd := exec.CommandContext(ctx, "sh", "-c", `git -C "$1" archive "$2" | tar -x -C "$3"`, "sh", root, rev, dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("git archive %s: %v\n%s", rev, err, out)
	}
	return dir, strings.TrimSpace(string(out)), nil
}

// version is the commit the binary was built from, marked when the
// checkout has uncommitted changes (other engineers work in it too).
func version(root string) string {
	cmd := exec.Command("git", "describe", "--always", "--dirty=+changes")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		return "(unknown commit)"
	}
	return strings.TrimSpace(string(out))
}

func randomKey(path string) error {
	b := make([]byte, 32)
	rand.Read(b)
	return os.WriteFile(path, []byte(fmt.Sprintf("%x\n", b)), 0o600)
}
