package filter_test

import (
	"bytes"
	"flag"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/internal/builtin"
	"github.com/fluxstream/fluxstream/internal/transformtest"
	"github.com/fluxstream/fluxstream/schemas"
	"github.com/fluxstream/fluxstream/transforms/filter"
)

var update = flag.Bool("update", false, "rewrite the golden files")

func newFilter(t testing.TB, yaml string) *filter.Transform {
	t.Helper()
	return transformtest.Node[*filter.Transform](t, "trim", yaml, filter.New)
}

func process(t testing.TB, tr core.Transform, r *core.Record) *core.Record {
	t.Helper()
	return transformtest.Process(t, tr, r)
}

func records(t testing.TB, path string) []*core.Record {
	t.Helper()
	return transformtest.Records(t, path, transformtest.IncludeAll)
}

var rec = &core.Record{Kind: core.KindEvent, ID: "1:submit:2", Cluster: "c", Source: "s",
	Event:    &core.Event{Name: "submit", Timestamp: 2, Context: []byte(`{"userid":6001,"urgency":16}`)},
	Job:      &core.Job{ID: 1, JobID: "f1", UserID: 6001, Urgency: 16, State: "NEW", TSubmit: 2, Name: "x", Cwd: "/home/a", Queue: "batch", Annotations: []byte(`{"user":{"n":1},"sched":{"s":"r"}}`)},
	Jobspec:  []byte(`{"resources":[{"type":"slot"}],"tasks":[{"command":["hostname"],"slot":"task"},{"command":["b"],"slot":"t2"}],"attributes":{"system":{"cwd":"/home/a","shell":{"options":{"a":1}}}}}`),
	R:        []byte(`{"version":1,"execution":{"R_lite":[],"properties":{"x":"0"},"nodelist":["vm"]}}`),
	Eventlog: []core.Event{{Name: "submit", Timestamp: 2, Context: []byte(`{"userid":6001,"urgency":16}`)}}}

// Hand-written expectations.
func TestFilterCases(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"exclude: [jobspec.attributes.system.shell, job.t_*, R.execution.properties, event.context.*, job.annotations.user]\n",
			`{"kind":"event","id":"1:submit:2","cluster":"c","source":"s","event":{"timestamp":2,"name":"submit","context":{}},"job":{"id":1,"jobid":"f1","userid":6001,"urgency":16,"state":"NEW","name":"x","cwd":"/home/a","queue":"batch","exception":{"occurred":false},"dependencies":[],"annotations":{"sched":{"s":"r"}}},"jobspec":{"resources":[{"type":"slot"}],"tasks":[{"command":["hostname"],"slot":"task"},{"command":["b"],"slot":"t2"}],"attributes":{"system":{"cwd":"/home/a"}}},"R":{"version":1,"execution":{"R_lite":[],"nodelist":["vm"]}},"eventlog":[{"timestamp":2,"name":"submit","context":{"userid":6001,"urgency":16}}]}`},
		// include: only the matches, plus what a record cannot lack;
		// userid and urgency become "not known".
		{"include: [job.state, jobspec.tasks.*.command, eventlog.*.context.userid]\n",
			`{"kind":"event","id":"1:submit:2","event":{"timestamp":2,"name":"submit"},"job":{"id":1,"jobid":"f1","userid":4294967295,"urgency":-1,"state":"NEW","exception":{"occurred":false},"dependencies":[],"annotations":{}},"jobspec":{"tasks":[{"command":["hostname"]},{"command":["b"]}]},"eventlog":[{"timestamp":2,"name":"submit","context":{"userid":6001}}]}`},
		// include then exclude; a wildcard over required fields keeps them.
		{"include: [job]\nexclude: [job.*]\n",
			`{"kind":"event","id":"1:submit:2","event":{"timestamp":2,"name":"submit"},"job":{"id":1,"jobid":"f1","userid":4294967295,"urgency":-1,"exception":{"occurred":false},"dependencies":[],"annotations":{}}}`},
		{"exclude: [jobspec, R, eventlog, job.annotations, cluster]\n",
			`{"kind":"event","id":"1:submit:2","source":"s","event":{"timestamp":2,"name":"submit","context":{"userid":6001,"urgency":16}},"job":{"id":1,"jobid":"f1","userid":6001,"urgency":16,"state":"NEW","name":"x","cwd":"/home/a","queue":"batch","exception":{"occurred":false},"t_submit":2,"dependencies":[],"annotations":{}}}`},
		{"exclude: [jobspec.tasks.1, jobspec.resources.*.type]\n", ""},
	} {
		before, _ := rec.MarshalJSON()
		out := process(t, newFilter(t, c.yaml), rec)
		got, _ := out.JSON()
		if c.want == "" {
			if !strings.Contains(string(got), `"jobspec":{"resources":[{}],"tasks":[{"command":["hostname"],"slot":"task"}],`) {
				t.Errorf("%s: %s", c.yaml, got)
			}
		} else if string(got) != c.want {
			t.Errorf("%s\n got %s\nwant %s", c.yaml, got, c.want)
		}
		if now, _ := rec.MarshalJSON(); !bytes.Equal(now, before) {
			t.Fatalf("%s: the input changed", c.yaml)
		}
		// The Avro form stays valid and says the same.
		b, err := schemas.AppendSingleObject(nil, out)
		if err != nil {
			t.Fatal(err)
		}
		back, _, err := schemas.Decode(schemas.FormatSingleObject, b)
		if err != nil {
			t.Fatal(err)
		}
		if bj, _ := back.MarshalJSON(); !bytes.Equal(bj, got) {
			t.Fatalf("Avro round trip:\n%s\n%s", bj, got)
		}
	}
}

func TestConfigErrorsAndWarnings(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"exclude: [job.id]\n", "transforms.trim.exclude: job.id cannot be removed: the record contract requires it (Avro has no null for it); sinks key records by it"},
		{"exclude: [job]\n", "transforms.trim.exclude: job cannot be removed: the record contract requires it (Avro has no null for it); sinks key records by it"},
		{"exclude: [job.requested.ncores]\n", "job.requested.ncores cannot be removed: the record contract requires it (Avro has no null for it); remove job.requested as a whole"},
		{"exclude: [job..name]\n", "transforms.trim.exclude: path \"job..name\": empty segment 2"},
		{"include: []\n", "transforms.trim: give include: (paths to keep) or exclude: (paths to remove), or both"},
		{"exclude: [job.name]\nincldue: [x]\n", `transforms.trim.incldue: unknown key (did you mean "include"?)`},
	} {
		nc, err := core.ParseNodeConfig(core.KindTransform, "trim", []byte(c.yaml))
		if err == nil {
			_, err = filter.New(nc)
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: err = %v, want %q", c.yaml, err, c.want)
		}
	}
	tr := newFilter(t, "include: [job.usrname, jobspec.anything.goes, job.name.first]\nexclude: [event.context.x, eventlog.x]\n")
	var got []string
	for _, w := range tr.Warnings() {
		got = append(got, w.Error())
	}
	want := []string{
		"trim.yaml:1: transforms.trim.include: warning: job.usrname can never match: it is not a field of the record (schemas/record.md)",
		"trim.yaml:1: transforms.trim.include: warning: job.name.first can never match: it is not a field of the record (schemas/record.md)",
		"trim.yaml:2: transforms.trim.exclude: warning: eventlog.x can never match: it is not a field of the record (schemas/record.md)",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("warnings:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// Every fixture record, filtered by several configs, encodes to Avro and
// back to the same JSON form; golden file for the scenario.
func TestFixturesGolden(t *testing.T) {
	configs := []string{
		"include: [event, job.state, job.result, job.queue, job.t_*, job.allocated, jobspec.attributes.system]\nexclude: [jobspec.attributes.system.shell, event.context.note]\n",
		"exclude: [jobspec, R, eventlog.*.context, job.annotations, job.requested, job.exception]\n",
		"include: [job.*]\n",
	}
	recs := records(t, "../../testdata/flux/journal-scenario-live-full.jsonl")
	var buf bytes.Buffer
	for ci, c := range configs {
		tr := newFilter(t, c)
		for i, r := range recs {
			out := process(t, tr, r)
			js, _ := out.JSON()
			b, err := schemas.AppendSingleObject(nil, out)
			if err != nil {
				t.Fatal(err)
			}
			back, _, err := schemas.Decode(schemas.FormatSingleObject, b)
			if err != nil {
				t.Fatalf("%s: %v", r.ID, err)
			}
			if bj, _ := back.MarshalJSON(); !bytes.Equal(bj, js) {
				t.Fatalf("config %d, %s: Avro round trip:\n%s\n%s", ci, r.ID, bj, js)
			}
			if i%40 == 0 {
				r2 := out.Clone()
				r2.Eventlog = nil
				js, _ := r2.JSON()
				buf.Write(js)
				buf.WriteByte('\n')
			}
		}
	}
	transformtest.Golden(t, filepath.Join("testdata", "scenario.golden.jsonl"), buf.Bytes(), *update)
}

func BenchmarkFilter(b *testing.B) {
	recs := records(b, transformtest.Bulk)
	for _, c := range []struct{ name, yaml string }{
		{"exclude", "exclude: [jobspec.attributes.system.shell, R.execution.properties, job.annotations, eventlog]\n"},
		{"include", "include: [event, job.state, job.result, job.queue, job.t_*, jobspec.tasks.*.command]\n"},
	} {
		b.Run(c.name, func(b *testing.B) {
			transformtest.Bench(b, recs, func() core.Transform { return newFilter(b, c.yaml) })
		})
	}
}

// The filtered copy shares what it does not change with the original:
// clearing or pruning inside shared parts (event, eventlog, allocated,
// purge, invalid) must never reach the record other sinks hold.
func TestInputUnchanged(t *testing.T) {
	recs := records(t, transformtest.Scenario)
	recs = append(recs,
		&core.Record{Kind: core.KindPurge, ID: "1:purge:2", Purge: &core.Purge{ID: 1, JobID: "f1", Reason: "purge-event", Time: 3, TSubmit: 2}},
		&core.Record{Kind: core.KindInvalid, ID: "x", Invalid: &core.Invalid{Error: "bad", Where: "line 1", Raw: "{"}})
	for _, yaml := range []string{
		"exclude: [job.allocated.ranks, job.allocated.starttime, event.context.userid, eventlog.*.context.userid, purge.time, invalid.raw, invalid.where, job.exception, jobspec.tasks]\n",
		"exclude: [event.context, eventlog.0.context]\n",
		"include: [event.context.severity, eventlog.*.context.urgency, job.allocated.nodelist, purge, invalid]\n",
	} {
		tr := newFilter(t, yaml)
		changed := 0
		for _, r := range recs {
			before, _ := r.MarshalJSON()
			out := process(t, tr, r)
			if after, _ := r.MarshalJSON(); !bytes.Equal(after, before) {
				t.Fatalf("%s: %s: the input changed:\n%s\n%s", yaml, r.ID, before, after)
			}
			if got, _ := out.JSON(); !bytes.Equal(got, before) {
				changed++
			}
		}
		if changed < len(recs)/2 {
			t.Fatalf("%s: only %d of %d records changed", yaml, changed, len(recs))
		}
	}
}

// validate prints the warnings: they reach the graph's, with the file
// and line of the key.
func TestWarningsInValidate(t *testing.T) {
	cfg := "sources:\n  journal: {type: replay, path: embedded:scenario}\ntransforms:\n  trim:\n    type: filter\n    inputs: [journal]\n    exclude: [job.usrname]\nsinks:\n  out: {type: stdout, inputs: [trim]}\n"
	loaded, err := core.LoadConfig("p.yaml", []byte(cfg), core.LoadOptions{Environ: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	g, err := core.Build(loaded, builtin.Registry())
	if err != nil {
		t.Fatal(err)
	}
	want := "p.yaml:7: transforms.trim.exclude: warning: job.usrname can never match: it is not a field of the record (schemas/record.md)"
	if got := g.Warnings().Error(); got != want {
		t.Fatalf("warnings:\n%s\nwant\n%s", got, want)
	}
}
