package route_test

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/internal/builtin"
	"github.com/fluxstream/fluxstream/internal/transformtest"
	"github.com/fluxstream/fluxstream/transforms/route"
)

func records(t testing.TB, path string) []*core.Record {
	t.Helper()
	return transformtest.Records(t, path, transformtest.IncludeDefault)
}

const routes = `routes:
  debug: 'job.queue == "debug"'
  clean: 'event.name == "clean"'
  fatal: 'event.name == "exception" && event.context.severity == 0'
`

func newRouter(t testing.TB, yaml string) *route.Router {
	t.Helper()
	nc, err := core.ParseNodeConfig(core.KindTransform, "route", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	r, err := route.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return r.(*route.Router)
}

func TestRouteScenario(t *testing.T) {
	rt := newRouter(t, routes)
	if got := rt.Outputs(); !slices.Equal(got, []string{"clean", "debug", "fatal"}) {
		t.Fatalf("outputs %v", got)
	}
	counts := map[string]int{}
	for _, r := range records(t, "../../testdata/flux/journal-scenario-live-full.jsonl") {
		outs, err := rt.Route(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range outs {
			counts[o]++
		}
		// Hand-written expectations per record.
		want := []string{}
		if r.Job != nil && r.Job.Queue == "debug" {
			want = append(want, "debug")
		}
		if r.Event.Name == "clean" {
			want = append(want, "clean")
		}
		if r.Event.Name == "exception" && strings.Contains(string(r.Event.Context), `"severity":0`) {
			want = append(want, "fatal")
		}
		if len(want) == 0 {
			want = []string{""}
		}
		slices.Sort(want)
		got := slices.Clone(outs)
		slices.Sort(got)
		if !slices.Equal(got, want) {
			t.Fatalf("%s: outputs %q, want %q", r.ID, got, want)
		}
	}
	if counts["clean"] != 25 || counts["fatal"] != 6 || counts["debug"] == 0 || counts[""] == 0 {
		t.Fatalf("counts %v", counts)
	}
}

// inputs: [route.debug] builds; an unknown output is an error that lists
// the outputs; a bad expression names node, key and column.
func TestRouteInDAG(t *testing.T) {
	build := func(routeYAML, inputs string) error {
		cfg := "sources:\n  journal: {type: replay, path: embedded:scenario}\ntransforms:\n  route:\n    type: route\n    inputs: [journal]\n" + routeYAML +
			"sinks:\n  dbg: {type: stdout, inputs: [" + inputs + "]}\n  rest: {type: stdout, inputs: [route]}\n"
		loaded, err := core.LoadConfig("p.yaml", []byte(cfg), core.LoadOptions{Environ: []string{}})
		if err != nil {
			return err
		}
		_, err = core.Build(loaded, builtin.Registry())
		return err
	}
	indented := "    routes:\n      debug: 'job.queue == \"debug\"'\n      clean: 'event.name == \"clean\"'\n"
	if err := build(indented, "route.debug, route.clean"); err != nil {
		t.Fatal(err)
	}
	if err := build(indented, "route.dbg"); err == nil || !strings.Contains(err.Error(), `input "route.dbg": route has no output "dbg" (outputs: route, route.clean, route.debug)`) {
		t.Fatalf("unknown output: %v", err)
	}
	bad := "    routes:\n      debug: 'job.queue = \"debug\"'\n"
	if err := build(bad, "route.debug"); err == nil || !strings.Contains(err.Error(), "p.yaml:8: transforms.route.routes.debug: expression error at column") {
		t.Fatalf("bad expression: %v", err)
	}
	if err := build("    routes:\n      a.b: 'true'\n", "route"); err == nil || !strings.Contains(err.Error(), "transforms.route.routes.a.b: route names start with a letter") {
		t.Fatalf("bad name: %v", err)
	}
}

// The runtime: route.debug gets the debug-queue records, the default
// output the ones no route took; a record two routes take reaches both.
func TestRoutePipeline(t *testing.T) {
	dir := t.TempDir()
	cfg := `data_dir: ` + dir + `
sources:
  journal: {type: replay, path: embedded:scenario, user_lookup: none}
transforms:
  route:
    type: route
    inputs: [journal]
    routes:
      debug: 'job.queue == "debug"'
      clean: 'event.name == "clean"'
sinks:
  dbg: {type: file, inputs: [route.debug], path: ` + dir + `/debug.jsonl, buffer: {type: memory}}
  cln: {type: file, inputs: [route.clean], path: ` + dir + `/clean.jsonl, buffer: {type: memory}}
  rest: {type: file, inputs: [route], path: ` + dir + `/rest.jsonl, buffer: {type: memory}}
`
	loaded, err := core.LoadConfig("p.yaml", []byte(cfg), core.LoadOptions{Environ: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	g, err := core.Build(loaded, builtin.Registry())
	if err != nil {
		t.Fatal(err)
	}
	if err := core.NewPipeline(g, core.RunOptions{Logger: slog.New(slog.DiscardHandler)}).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	lines := func(name string) []string {
		b, err := readFile(dir + "/" + name)
		if err != nil {
			t.Fatal(err)
		}
		return strings.Split(strings.TrimSpace(string(b)), "\n")
	}
	dbg, cln, rest := lines("debug.jsonl"), lines("clean.jsonl"), lines("rest.jsonl")
	for _, l := range dbg {
		if !strings.Contains(l, `"queue":"debug"`) {
			t.Fatalf("debug output: %s", l)
		}
	}
	for _, l := range rest {
		if strings.Contains(l, `"queue":"debug"`) || strings.Contains(l, `"name":"clean"},"job"`) {
			t.Fatalf("default output: %s", l)
		}
	}
	total := len(records(t, "embedded:scenario"))
	both := 0
	for _, l := range dbg {
		if slices.Contains(cln, l) {
			both++
		}
	}
	if len(cln) != 25 || len(dbg)+len(cln)-both+len(rest) != total || both == 0 {
		t.Fatalf("debug %d, clean %d (both %d), rest %d, of %d", len(dbg), len(cln), both, len(rest), total)
	}
}

func BenchmarkRoute(b *testing.B) {
	recs := records(b, transformtest.Bulk)
	rt := newRouter(b, "routes:\n  debug: 'job.queue == \"debug\"'\n  clean: 'event.name == \"clean\"'\n")
	transformtest.PerCPU(b, func() {
		for i := 0; i < b.N; i++ {
			if _, err := rt.Route(context.Background(), recs[i%len(recs)]); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func readFile(p string) ([]byte, error) { return os.ReadFile(p) }

var update = flag.Bool("update", false, "rewrite the golden files")

// Golden: the outputs of every scenario record ("" is the default).
func TestGolden(t *testing.T) {
	rt := newRouter(t, routes)
	var buf bytes.Buffer
	for _, r := range records(t, "../../testdata/flux/journal-scenario-live-full.jsonl") {
		outs, err := rt.Route(context.Background(), r)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(&buf, "%s %q\n", r.ID, outs)
	}
	transformtest.Golden(t, "testdata/scenario.golden.txt", buf.Bytes(), *update)
}
