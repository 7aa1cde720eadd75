package main

import (
	"bufio"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core/coretest"
	"github.com/fluxstream/fluxstream/sources/flux/fluxtest"
)

var update = flag.Bool("update", false, "rewrite golden files")

func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		gl, wl := strings.Split(got, "\n"), strings.Split(string(want), "\n")
		for i := range min(len(gl), len(wl)) {
			if gl[i] != wl[i] {
				t.Fatalf("%s differs at line %d:\n got %s\nwant %s\n(go test -update rewrites it)", name, i+1, gl[i], wl[i])
			}
		}
		t.Fatalf("%s: %d lines, want %d (go test -update rewrites it)", name, len(gl), len(wl))
	}
}

const goodConfig = `
data_dir: %DIR%/state
cluster: demo
sources:
  journal:
    type: replay
    path: embedded:scenario
    user_lookup: none
transforms: {}
sinks:
  archive:
    type: file
    inputs: [journal]
    path: %DIR%/out/events.jsonl
  console:
    type: stdout
    inputs: [journal]
    format: text
`

func config(t *testing.T, text string) (string, string) {
	t.Helper()
	dir := t.TempDir()
	return writeFile(t, dir, "fluxstream.yaml", strings.ReplaceAll(text, "%DIR%", dir)), dir
}

func TestValidate(t *testing.T) {
	path, _ := config(t, goodConfig)
	code, out, errOut := runCLI(t, "validate", "-c", path)
	if code != 0 || out != path+": ok (1 sources, 0 transforms, 2 sinks)\n" {
		t.Fatalf("validate = %d %q %q", code, out, errOut)
	}

	bad, dir := config(t, `
sources:
  journal:
    type: replay
    path: embedded:scenario
    speed: fast
sinks:
  archive:
    type: file
    inputs: [jornal]
    pth: /tmp/x
`)
	code, out, errOut = runCLI(t, "validate", "-c", bad)
	want := bad + `: invalid config:
` + bad + `:2: sources.journal: nothing reads this source: add "journal" to the inputs of a transform or sink
` + bad + `:5: sources.journal.speed: cannot use "fast" as float64: strconv.ParseFloat: invalid syntax
` + bad + `:7: sinks.archive.path: must be set
` + bad + `:9: sinks.archive.inputs: unknown input "jornal" (did you mean "journal"?)
` + bad + `:10: sinks.archive.pth: unknown key (did you mean "path"?)
`
	if code != exitConfig || out != "" || errOut != want {
		t.Fatalf("validate = %d\n%s\nwant\n%s", code, errOut, want)
	}
	// run refuses the same config and starts nothing.
	code, _, _ = runCLI(t, "run", "-c", bad, "--data-dir", filepath.Join(dir, "state"))
	if code != exitConfig {
		t.Fatalf("run exit %d", code)
	}
	if _, err := os.Stat(filepath.Join(dir, "state")); !os.IsNotExist(err) {
		t.Fatal("run with a bad config created its data dir")
	}

	broken, _ := config(t, "sources:\n  a: {type: replay\n")
	code, _, errOut = runCLI(t, "validate", "-c", broken)
	if code != exitConfig || !strings.HasPrefix(errOut, broken+":2: invalid YAML:") {
		t.Fatalf("broken YAML: %d %q", code, errOut)
	}
	code, _, errOut = runCLI(t, "validate", "-c", "/nonexistent.yaml")
	if code != exitConfig || !strings.Contains(errOut, "read config: open /nonexistent.yaml") {
		t.Fatalf("missing file: %d %q", code, errOut)
	}
	code, _, errOut = runCLI(t, "validate")
	if code != exitConfig || !strings.Contains(errOut, "no config: pass -c FILE") {
		t.Fatalf("no config: %d %q", code, errOut)
	}
}

func TestGraph(t *testing.T) {
	path, _ := config(t, goodConfig)
	for _, format := range []string{"dot", "mermaid"} {
		code, out, errOut := runCLI(t, "graph", "-c", path, "--format", format)
		if code != 0 {
			t.Fatalf("graph %s: %d %s", format, code, errOut)
		}
		golden(t, "graph."+format, out)
	}
	if code, _, _ := runCLI(t, "graph", "-c", path, "--format", "png"); code != exitConfig {
		t.Fatalf("unknown format exit %d", code)
	}
}

// dry-run prints, labelled by sink, what every sink would receive; nothing
// is written. The scenario through the text console, and a small journal
// through both sinks (the full JSON records).
func TestDryRunGolden(t *testing.T) {
	for _, tc := range []struct {
		golden, journal string
		lines           int
	}{
		{"dry-run-scenario.golden", "embedded:scenario", 2 * 381},
		{"dry-run-active-only.golden", "../../testdata/flux/journal-active-only-not-full.jsonl", 2 * 20},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			journal, _ := filepath.Abs(tc.journal)
			if strings.HasPrefix(tc.journal, "embedded:") {
				journal = tc.journal
			}
			path, dir := config(t, strings.Replace(goodConfig, "embedded:scenario", journal, 1))
			code, out, errOut := runCLI(t, "dry-run", "-c", path)
			if code != 0 {
				t.Fatalf("dry-run: %d %s", code, errOut)
			}
			for _, p := range []string{"state", "out"} {
				if _, err := os.Stat(filepath.Join(dir, p)); !os.IsNotExist(err) {
					t.Errorf("dry-run created %s", p)
				}
			}
			counts := map[string]int{}
			var console []string
			sc := bufio.NewScanner(strings.NewReader(out))
			sc.Buffer(nil, 1<<20)
			for sc.Scan() {
				label, _, _ := strings.Cut(sc.Text(), " ")
				counts[label]++
				if label == "[console]" {
					console = append(console, sc.Text())
				}
			}
			if counts["[archive]"]+counts["[console]"] != tc.lines || counts["[archive]"] != counts["[console]"] {
				t.Fatalf("lines per sink: %v", counts)
			}
			if strings.HasPrefix(tc.journal, "embedded:") {
				out = strings.Join(console, "\n") + "\n" // the JSON is pinned by the other case
			}
			golden(t, tc.golden, out)
		})
	}
}

func TestVersionAndHelp(t *testing.T) {
	code, out, _ := runCLI(t, "version")
	if code != 0 || !strings.HasPrefix(out, "fluxstream dev") || !strings.Contains(out, "flux-core 0.88") {
		t.Fatalf("version: %d %q", code, out)
	}
	for _, cmd := range []string{"run", "validate", "graph", "dry-run", "version"} {
		code, out, _ := runCLI(t, cmd, "--help")
		if code != 0 || !strings.Contains(out, "Usage:") {
			t.Errorf("%s --help: %d %q", cmd, code, out)
		}
	}
	if code, _, errOut := runCLI(t, "frobnicate"); code != exitConfig || !strings.Contains(errOut, "unknown command") {
		t.Errorf("unknown command: %d %q", code, errOut)
	}
}

// With no config, run replays the embedded journal into a file, and says
// how to reach a real instance; a second run finds nothing new.
func TestDemo(t *testing.T) {
	dir := t.TempDir()
	cmd := fluxstreamCmd(t, dir, "run")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	for _, want := range []string{"No config given: running the built-in demo", "381 records", "fluxstream run --uri local:///run/flux/local"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("demo output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "level=INFO") {
		t.Errorf("log lines in the middle of the demo's prose:\n%s", out)
	}
	b, err := os.ReadFile(filepath.Join(dir, "fluxstream-demo", "records.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), "\n"); n != 381 {
		t.Fatalf("demo wrote %d records", n)
	}
	// The hint's grep ends on a record that shows the job's state.
	var last string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, `"jobid":"fCHcyt63"`) && strings.Contains(line, `"kind":"event"`) {
			last = line
		}
	}
	if !strings.Contains(string(out), `grep '"kind":"event"'`) || !strings.Contains(last, `"result":"TIMEOUT"`) {
		t.Errorf("the demo's hint does not lead to the job's final state:\n%s\nlast: %s", out, last)
	}
	out, err = fluxstreamCmd(t, dir, "run").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "Nothing new") {
		t.Fatalf("second run: %v\n%s", err, out)
	}
}

// dry-run of a Kafka sink behind the avro transform shows, per record, the
// topic, the key, the headers and the Avro value decoded back to JSON. No
// broker or registry is contacted.
func TestDryRunKafkaGolden(t *testing.T) {
	journal, _ := filepath.Abs("../../testdata/flux/journal-active-only-not-full.jsonl")
	path, _ := config(t, `
cluster: demo
sources:
  flux:
    type: replay
    path: `+journal+`
    user_lookup: none
    include: {jobspec: never, R: never}
transforms:
  avro:
    type: avro
    inputs: [flux]
    registry: {urls: ["http://registry.invalid:8081"], subject: flux-jobs-value}
sinks:
  kafka:
    type: kafka
    inputs: [avro]
    brokers: [kafka.invalid:9092]
    topic: "flux.{{cluster}}.{{kind}}"
    headers: {site: example}
`)
	code, out, errOut := runCLI(t, "dry-run", "-c", path)
	if code != 0 {
		t.Fatalf("dry-run: %d %s", code, errOut)
	}
	golden(t, "dry-run-kafka.golden", out)
	first := strings.SplitN(out, "\n", 2)[0]
	for _, want := range []string{"[kafka] topic=flux.demo.event key=1671933460480 ", "fluxstream-id=1671933460480:submit:",
		"content-type=application/vnd.confluent.avro", "site=example", ` value={"kind":"event","id":"1671933460480:submit:`} {
		if !strings.Contains(first, want) {
			t.Errorf("first line lacks %q:\n%s", want, first)
		}
	}
}

// run --uri streams an instance to stdout with throwaway state.
func TestRunURI(t *testing.T) {
	b, in := fluxtest.StartScenario(t, "../../testdata/flux")
	in.SeekTo(in.Len())
	home := t.TempDir()
	cmd := fluxstreamCmd(t, t.TempDir(), "run", "--uri", b.URI(), "--format", "text")
	cmd.Env = append(cmd.Env, "HOME="+home, "XDG_STATE_HOME=", "STATE_DIRECTORY=")
	var out coretest.SyncBuffer
	cmd.Stdout = &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	want := 0
	for _, r := range in.Backlog(in.Len(), true) {
		want += len(r.Events)
	}
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(out.String(), "\n") < want && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	cmd.Process.Signal(syscall.SIGTERM)
	if err := cmd.Wait(); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	// The final backlog: 15 jobs still in Flux plus the two later ones.
	if len(lines) != want || want != 234 || !strings.Contains(lines[0], "submit") {
		t.Fatalf("%d lines, first %q", len(lines), lines[0])
	}
	if entries, _ := os.ReadDir(home); len(entries) != 0 {
		t.Fatalf("run --uri left state in the home directory: %v", entries)
	}
}

// On a machine without the example's secret file (a newcomer's), validate
// and graph pass with a warning naming the file, dry-run --replay shows
// what each sink would get (so does dry-run, with no Flux to reach), and
// run refuses to start.
func TestExampleConfigOnAFreshMachine(t *testing.T) {
	if _, err := os.Stat("/etc/fluxstream/kafka-password"); err == nil {
		t.Skip("this machine has /etc/fluxstream/kafka-password")
	}
	example := "../../config.example.yaml"
	for _, args := range [][]string{{"validate"}, {"graph"}} {
		code, _, stderr := runCLI(t, append(args, "-c", example)...)
		if code != 0 || !strings.Contains(stderr, "warning: ") || !strings.Contains(stderr, "/etc/fluxstream/kafka-password") {
			t.Errorf("%v: exit %d, stderr:\n%s", args, code, stderr)
		}
	}
	code, stdout, stderr := runCLI(t, "dry-run", "-c", example, "--replay", "embedded:scenario")
	if code != 0 {
		t.Fatalf("dry-run --replay: exit %d\n%s", code, stderr)
	}
	if k, a := strings.Count(stdout, "\n[kafka] topic=flux.mycluster.jobs"), strings.Count(stdout, "\n[archive] {"); k < 300 || a < 300 {
		t.Errorf("dry-run --replay: %d kafka and %d archive lines", k, a)
	}
	// Plain dry-run with no Flux to reach: the recorded journal instead,
	// said so, the same output.
	t.Setenv("FLUX_URI", "local://"+t.TempDir()+"/no-broker")
	code, plain, stderr := runCLI(t, "dry-run", "-c", example)
	if code != 0 || !strings.Contains(stderr, "no Flux reachable; showing the journal recorded") || plain != stdout {
		t.Errorf("dry-run without Flux: exit %d, %d bytes (want %d as with --replay), stderr:\n%s", code, len(plain), len(stdout), stderr)
	}
	code, _, stderr = runCLI(t, "run", "-c", example)
	if code != 2 || !strings.Contains(stderr, "cannot read secret file") {
		t.Errorf("run: exit %d, want 2 with the secret named:\n%s", code, stderr)
	}
}
