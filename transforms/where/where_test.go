package where_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/internal/builtin"
	"github.com/fluxstream/fluxstream/internal/transformtest"
	"github.com/fluxstream/fluxstream/transforms/where"
)

func records(t testing.TB, path string) []*core.Record {
	t.Helper()
	return transformtest.Records(t, path, transformtest.IncludeRaw)
}

const scenario = "../../testdata/flux/journal-scenario-live-full.jsonl"

func newWhere(t testing.TB, yaml string) core.Transform {
	t.Helper()
	nc, err := core.ParseNodeConfig(core.KindTransform, "clean", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := where.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return tr.(core.Transform)
}

func count(t testing.TB, tr core.Transform, recs []*core.Record) (n int, kept []*core.Record) {
	t.Helper()
	for _, r := range recs {
		out, err := tr.Process(context.Background(), r)
		if err != nil {
			t.Fatalf("%s: %v", r.ID, err)
		}
		if len(out) == 1 {
			if out[0] != r {
				t.Fatal("where passes the record itself on")
			}
			kept = append(kept, r)
		}
	}
	return len(kept), kept
}

// journalEvents counts the events of the raw journal that pass pred,
// independently of the source: the expected counts.
func journalEvents(t testing.TB, path string, pred func(name string, ctx map[string]any) bool) int {
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var resp struct {
			Events []struct {
				Name    string         `json:"name"`
				Context map[string]any `json:"context"`
			} `json:"events"`
		}
		json.Unmarshal(sc.Bytes(), &resp)
		for _, e := range resp.Events {
			if pred(e.Name, e.Context) {
				n++
			}
		}
	}
	return n
}

func TestWhereOnTheScenario(t *testing.T) {
	recs := records(t, scenario)
	// Counted from the journal itself: 25 clean events.
	n, kept := count(t, newWhere(t, `expr: 'event.name == "clean"'`), recs)
	if want := journalEvents(t, scenario, func(name string, _ map[string]any) bool { return name == "clean" }); n != want || n != 25 {
		t.Fatalf("clean: %d records, the journal has %d", n, want)
	}
	for _, r := range kept {
		if r.Job.State != "INACTIVE" {
			t.Fatalf("%s: clean in state %s", r.ID, r.Job.State)
		}
	}
	// The context: fatal exceptions (6 of the 7).
	n, _ = count(t, newWhere(t, `expr: 'event.name == "exception" && event.context.severity == 0'`), recs)
	want := journalEvents(t, scenario, func(name string, ctx map[string]any) bool { return name == "exception" && ctx["severity"] == 0.0 })
	if n != want || n != 6 {
		t.Fatalf("fatal exceptions: %d, journal %d", n, want)
	}
	// The job snapshot: results of the final records.
	n, kept = count(t, newWhere(t, `expr: 'event.name == "clean" && job.result in ["FAILED", "TIMEOUT"] && job.queue == "batch"'`), recs)
	for _, r := range kept {
		if r.Job.Result != "FAILED" && r.Job.Result != "TIMEOUT" {
			t.Fatal(r.Job.Result)
		}
	}
	if n == 0 || n >= 25 {
		t.Fatalf("failed or timed out: %d", n)
	}
	// Purge records: no job snapshot fields, kind purge.
	purge := &core.Record{Kind: core.KindPurge, ID: "1:purge:2", Purge: &core.Purge{ID: 1, JobID: "f1", Reason: "purge-event"}}
	if n, _ := count(t, newWhere(t, `expr: 'kind == "purge" && !has_job && purge.reason == "purge-event"'`), []*core.Record{purge}); n != 1 {
		t.Fatal("purge record not kept")
	}
}

// A runtime error (here: a number where a string is needed) is an error
// of Process, which the runtime dead-letters; it does not drop silently.
func TestRuntimeError(t *testing.T) {
	tr := newWhere(t, `expr: 'event.context.note matches "^x"'`)
	r := &core.Record{Kind: core.KindEvent, ID: "1:memo:1", Event: &core.Event{Name: "memo", Timestamp: 1, Context: []byte(`{"note":42}`)}}
	if _, err := tr.Process(context.Background(), r); err == nil || !strings.Contains(err.Error(), `expression "event.context.note matches \"^x\""`) {
		t.Fatalf("err = %v", err)
	}
}

// validate (core.Build) reports syntax and type errors with the node, the
// key and the column of the expression.
func TestExpressionErrorsInValidate(t *testing.T) {
	for _, c := range []struct{ expr, want string }{
		{`event.name == "clean" && job.stat == "x"`, "transforms.clean.expr: expression error at column 30 of the expression: job has no field stat"},
		{`event.name == `, "transforms.clean.expr: expression error at column"},
		{`job.ntasks + 1`, "transforms.clean.expr: expression: expected bool, but got int"},
		{`event.name == "clean" &&\n  job.queue == 3`, "transforms.clean.expr: expression error at line 2, column"},
	} {
		cfg := "sources:\n  journal: {type: replay, path: embedded:scenario}\ntransforms:\n  clean:\n    type: where\n    inputs: [journal]\n    expr: \"" + strings.ReplaceAll(c.expr, `"`, `\"`) + "\"\nsinks:\n  out: {type: stdout, inputs: [clean]}\n"
		loaded, err := core.LoadConfig("p.yaml", []byte(cfg), core.LoadOptions{Environ: []string{}})
		if err != nil {
			t.Fatal(err)
		}
		_, err = core.Build(loaded, builtin.Registry())
		if err == nil || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), "p.yaml:7: ") {
			t.Errorf("%s:\n err = %v\nwant %q", c.expr, err, c.want)
		}
	}
	// The node limit.
	nc, _ := core.ParseNodeConfig(core.KindTransform, "clean", []byte("expr: '1 + 1 + 1 + 1 + 1 + 1 == 6'\nmax_nodes: 5\n"))
	if _, err := where.New(nc); err == nil || !strings.Contains(err.Error(), "transforms.clean.expr: expression") {
		t.Fatalf("node limit: %v", err)
	}
	nc, _ = core.ParseNodeConfig(core.KindTransform, "clean", []byte("expr: 'true'\nexpression: x\n"))
	if _, err := where.New(nc); err == nil || !strings.Contains(err.Error(), "transforms.clean.expression: unknown key") {
		t.Fatalf("unknown key: %v", err)
	}
}

// The config shape of the issue builds with the built-in registry.
func TestConfigShape(t *testing.T) {
	cfg := `sources:
  journal: {type: replay, path: embedded:scenario}
transforms:
  anon: {type: anonymize, inputs: [journal], key_file: /etc/fluxstream/anon.key}
  clean: {type: where, inputs: [anon], expr: 'event.name == "clean"'}
sinks:
  out: {type: stdout, inputs: [clean]}
`
	loaded, err := core.LoadConfig("p.yaml", []byte(cfg), core.LoadOptions{Environ: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := core.Build(loaded, builtin.Registry()); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkWhere(b *testing.B) {
	recs := records(b, transformtest.Bulk)
	for _, c := range []struct{ name, expr string }{
		{"event.name", `event.name == "clean"`},
		{"snapshot", `event.name == "clean" && job.result != "COMPLETED" && job.queue in ["batch", "debug"]`},
		{"context", `event.name == "submit" && event.context.urgency > 16`},
	} {
		b.Run(c.name, func(b *testing.B) {
			tr := newWhere(b, "expr: '"+c.expr+"'")
			transformtest.Bench(b, recs, func() core.Transform { return tr })
		})
	}
}

var update = flag.Bool("update", false, "rewrite the golden files")

// Golden: which scenario records each expression keeps (id, event, the
// job's state), over the event, the context and the snapshot.
func TestGolden(t *testing.T) {
	recs := transformtest.Records(t, scenario, transformtest.IncludeDefault)
	var buf bytes.Buffer
	for _, expr := range []string{
		`event.name == "clean" && job.result != "COMPLETED"`,
		`event.name == "exception" && event.context.severity == 0`,
		`event.name == "submit" && event.context.urgency != 16`,
		`job.queue == "debug" && event.name in ["alloc", "finish"]`,
		`kind != "event" || (has_job && job.state == "SCHED" && event.name == "priority" && job.priority > 0)`,
	} {
		fmt.Fprintf(&buf, "# %s\n", expr)
		_, kept := count(t, newWhere(t, "expr: '"+expr+"'"), recs)
		for _, r := range kept {
			fmt.Fprintf(&buf, "%s %s\n", r.ID, r.Job.State)
		}
	}
	transformtest.Golden(t, "testdata/scenario.golden.txt", buf.Bytes(), *update)
}
