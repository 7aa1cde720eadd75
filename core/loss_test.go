package core_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/core/coretest"
	"github.com/fluxstream/fluxstream/core/spool"
)

// The loss paths of the first milestone's review: each test here fails if
// a record is acknowledged without reaching a sink or a dead-letter file.

func readDeadLetters(t *testing.T, path string) []map[string]any {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]any
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		out = append(out, m)
	}
	return out
}

// A transform error is not a delivery: the record lands in the node's
// dead-letter file with the reason before it is acknowledged.
func TestTransformErrorIsDeadLettered(t *testing.T) {
	g, inst := mustBuild(t, `
sources:
  gen: {type: gen, count: 40, bad_every: 10}
transforms:
  t: {type: nth, inputs: [gen]}
sinks:
  out: {type: mem, inputs: [t]}
`)
	dataDir := t.TempDir()
	if err := runPipeline(t, g, core.RunOptions{DataDir: dataDir}); err != nil {
		t.Fatal(err)
	}
	if got := len(inst.sinks["out"].Got()); got != 36 {
		t.Fatalf("sink got %d records, want 36", got)
	}
	if acked := inst.sources["gen"].Acked(); acked != 40 {
		t.Fatalf("source saw %d acknowledged, want 40", acked)
	}
	lines := readDeadLetters(t, filepath.Join(dataDir, "deadletter", "t.jsonl"))
	var dead []string
	for _, l := range lines {
		if l["error"] != "bad record" || l["node"] != "t" {
			t.Errorf("dead letter %v", l)
		}
		dead = append(dead, l["record"].(map[string]any)["id"].(string))
	}
	if want := []string{"rec-00000-bad", "rec-00010-bad", "rec-00020-bad", "rec-00030-bad"}; !slices.Equal(dead, want) {
		t.Fatalf("dead-lettered %v, want %v", dead, want)
	}
	st, err := os.Stat(filepath.Join(dataDir, "deadletter", "t.jsonl"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("dead-letter file mode %v, %v", st.Mode(), err)
	}
}

// When the dead-letter file cannot be written, the failed record is not
// acknowledged and the pipeline stops, saying why.
func TestTransformErrorWithoutDeadLetterFileStops(t *testing.T) {
	g, inst := mustBuild(t, `
sources:
  gen: {type: gen, count: 40, batch: 40, bad_every: 10}
transforms:
  t: {type: nth, inputs: [gen]}
sinks:
  out: {type: mem, inputs: [t], buffer: {type: memory}}
`)
	dataDir := t.TempDir()
	// A file where the directory should be: MkdirAll fails.
	if err := os.WriteFile(filepath.Join(dataDir, "deadletter"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	err := runPipeline(t, g, core.RunOptions{DataDir: dataDir})
	if err == nil || !strings.Contains(err.Error(), "rec-00000-bad") || !strings.Contains(err.Error(), "dead-letter") {
		t.Fatalf("run error = %v", err)
	}
	if acked := inst.sources["gen"].Acked(); acked != 0 {
		t.Fatalf("%d records acknowledged although one of their batch is nowhere", acked)
	}
}

// A record that fails only for now inside a batch that otherwise went
// through is retried until delivered, and only then acknowledged.
func TestTransientPerRecordFailureIsRetried(t *testing.T) {
	g, inst := mustBuild(t, `
sources:
  gen: {type: gen, count: 50}
sinks:
  out:
    type: mem
    inputs: [gen]
    flaky_every: 7
    buffer: {type: memory}
    retry: {initial_backoff: 1ms, max_backoff: 2ms}
`)
	if err := runPipeline(t, g, core.RunOptions{}); err != nil {
		t.Fatal(err)
	}
	got := inst.sinks["out"].Got()
	slices.Sort(got)
	if want := ids("rec-", 50, nil); !slices.Equal(got, want) {
		t.Fatalf("delivered %d records, want 50; missing the retried ones?\n%v", len(got), got)
	}
	if acked := inst.sources["gen"].Acked(); acked != 50 {
		t.Fatalf("acked %d", acked)
	}
}

// A spool entry that passes its checksum but does not decode (written by
// a foreign or broken build) goes, raw, to the dead-letter file with where
// it was; the entries around it are delivered.
func TestUndecodableSpoolEntryIsDeadLettered(t *testing.T) {
	dataDir := t.TempDir()
	g, inst := mustBuild(t, `
sources:
  gen: {type: gen, count: 3}
sinks:
  out: {type: mem, inputs: [gen]}
`)
	// First run: three records reach the spool but the sink is stalled,
	// so they stay there when the run ends.
	seed(t, dataDir, g, inst)
	sp, err := spool.Open(filepath.Join(dataDir, "spool", "out"), spool.Options{})
	if err != nil {
		t.Fatal(err)
	}
	garbage := []byte{1, 0, 0xff, 0xff, 0xff}
	if _, err := sp.Append(garbage); err != nil {
		t.Fatal(err)
	}
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}

	g, inst = mustBuild(t, `
sources:
  gen: {type: gen, count: 0}
sinks:
  out: {type: mem, inputs: [gen]}
`)
	p := core.NewPipeline(g, core.RunOptions{DataDir: dataDir, Logger: quietLogger()})
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := inst.sinks["out"].Got(); !slices.Equal(got, ids("rec-", 3, nil)) {
		t.Fatalf("delivered %v", got)
	}
	lines := readDeadLetters(t, filepath.Join(dataDir, "deadletter", "out.jsonl"))
	if len(lines) != 1 {
		t.Fatalf("dead letters: %v", lines)
	}
	raw, _ := json.Marshal(garbage)
	if got, _ := json.Marshal(lines[0]["raw"]); string(got) != string(raw) || !strings.Contains(lines[0]["where"].(string), "entry 3") {
		t.Fatalf("dead letter %v", lines[0])
	}
	for _, s := range p.Stats() {
		if s.Node == "out" && (s.DeadLettered != 1 || s.PendingRecords != 0) {
			t.Fatalf("stats %+v", s)
		}
	}
}

// seed runs g once with its sink stalled, so that what the source emits
// stays in the sink's spool.
func seed(t *testing.T, dataDir string, g *core.Graph, inst *instances) {
	t.Helper()
	stall := make(chan struct{})
	for _, s := range inst.sinks {
		s.stall = stall
	}
	p := core.NewPipeline(g, core.RunOptions{DataDir: dataDir, Logger: quietLogger(), ShutdownTimeout: 1})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	for inst.sources["gen"].Acked() < inst.sources["gen"].Count {
		time.Sleep(time.Millisecond)
	}
	cancel()
	<-done
}

// Changing everything a clone holds, in place, leaves the original as it
// was: Clone copies every part a transform can reach by assignment.
func TestCloneIsDeep(t *testing.T) {
	var r core.Record
	n := 0
	fillAll(reflect.ValueOf(&r).Elem(), &n)
	r.Encoded = &core.Encoded{Format: "f", Value: []byte{1, 2}, Headers: map[string]string{"a": "1"}}
	want, _ := r.JSON() // cached on the original
	wantEnc := *r.Encoded
	wantHeaders := map[string]string{"a": "1"}

	c := r.Clone()
	n = 1000
	mutateAll(reflect.ValueOf(c).Elem(), &n)
	c.Encoded.Headers["a"] = "changed"

	if got, _ := r.MarshalJSON(); string(got) != string(want) {
		t.Fatalf("changing the clone changed the original:\n got %s\nwant %s", got, want)
	}
	if !reflect.DeepEqual(r.Encoded.Headers, wantHeaders) || string(r.Encoded.Value) != string(wantEnc.Value) {
		t.Fatalf("encoded part changed: %+v", r.Encoded)
	}
	// The clone's JSON form is its own, computed fresh.
	got, _ := c.JSON()
	fresh, _ := c.MarshalJSON()
	if string(got) != string(fresh) || string(got) == string(want) {
		t.Fatalf("clone JSON form is stale:\n got %s\nfresh %s", got, fresh)
	}
}

// Appending to the clone's shared JSON bytes never writes into the
// original's memory.
func TestCloneSharedBytesAreClipped(t *testing.T) {
	backing := []byte(`{"a":1}xxxx`)
	r := &core.Record{Kind: core.KindEvent, ID: "x", Jobspec: backing[:7], Event: &core.Event{Name: "e", Context: backing[:7]}}
	c := r.Clone()
	_ = append(c.Jobspec, '!')
	_ = append(c.Event.Context, '?')
	if string(backing) != `{"a":1}xxxx` {
		t.Fatalf("append to the clone wrote into the original: %q", backing)
	}
}

func TestEditJSON(t *testing.T) {
	orig := []byte(`{"user":"alice","n":12345678901234567890,"path":"/home/alice/x<y>"}`)
	keep := string(orig)
	out, err := core.EditJSON(orig, func(v any) (any, error) {
		v.(map[string]any)["user"] = "u-1"
		return v, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if string(orig) != keep {
		t.Fatalf("input changed: %s", orig)
	}
	if want := `{"n":12345678901234567890,"path":"/home/alice/x<y>","user":"u-1"}`; string(out) != want {
		t.Fatalf("got %s\nwant %s", out, want)
	}
}

// fillAll sets every exported field reachable from v to a non-zero value.
func fillAll(v reflect.Value, n *int) {
	*n++
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fillAll(v.Elem(), n)
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				fillAll(v.Field(i), n)
			}
		}
	case reflect.String:
		v.SetString("s" + strconv.Itoa(*n))
	case reflect.Int, reflect.Int64:
		v.SetInt(int64(*n))
	case reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(*n))
	case reflect.Float64:
		v.SetFloat(float64(*n) + 0.5)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Slice:
		if v.Type() == reflect.TypeOf(json.RawMessage(nil)) {
			v.SetBytes([]byte(`{"n":` + strconv.Itoa(*n) + `}`))
			return
		}
		s := reflect.MakeSlice(v.Type(), 2, 2)
		for i := range 2 {
			fillAll(s.Index(i), n)
		}
		v.Set(s)
	}
}

// mutateAll changes, in place, every value reachable from v: through
// pointers and into slice elements, as a careless transform would. JSON
// bytes are replaced (Clone shares them by contract).
func mutateAll(v reflect.Value, n *int) {
	*n++
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			mutateAll(v.Elem(), n)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				mutateAll(v.Field(i), n)
			}
		}
	case reflect.String:
		v.SetString("m" + strconv.Itoa(*n))
	case reflect.Int, reflect.Int64:
		v.SetInt(-int64(*n))
	case reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(*n) << 8)
	case reflect.Float64:
		v.SetFloat(-float64(*n))
	case reflect.Bool:
		v.SetBool(!v.Bool())
	case reflect.Slice:
		if v.Type() == reflect.TypeOf(json.RawMessage(nil)) || v.Type().Elem().Kind() == reflect.Uint8 {
			v.SetBytes([]byte(`{"m":` + strconv.Itoa(*n) + `}`))
			return
		}
		for i := range v.Len() {
			mutateAll(v.Index(i), n)
		}
	}
}

// staleEditor caches the JSON form of its clone before it is done
// changing it, as a transform might by calling a helper that encodes.
type staleEditor struct{}

func (staleEditor) Process(_ context.Context, r *core.Record) ([]*core.Record, error) {
	c := r.Clone()
	c.JSON()
	c.Job.Username = "changed-after-encoding"
	return []*core.Record{c}, nil
}

// What a sink ships as a record's JSON form is always a fresh encode of
// the record as the transform left it.
func TestTransformOutputJSONIsFresh(t *testing.T) {
	reg, _ := testRegistry()
	reg.RegisterTransform("stale", "caches JSON early", func(nc *core.NodeConfig) (any, error) {
		return staleEditor{}, nc.Decode(&struct{}{})
	})
	col := &coretest.Collector{}
	col.Register(reg)
	g := coretest.Build(t, reg, `
sources:
  gen: {type: gen, count: 5}
transforms:
  t: {type: stale, inputs: [gen]}
sinks:
  out: {type: collect, inputs: [t], buffer: {type: memory}}
`)
	if err := runPipeline(t, g, core.RunOptions{}); err != nil {
		t.Fatal(err)
	}
	recs := col.All()
	if len(recs) != 5 {
		t.Fatalf("%d records", len(recs))
	}
	for _, r := range recs {
		got, _ := r.JSON()
		if !strings.Contains(string(got), "changed-after-encoding") {
			t.Fatalf("sink got a stale JSON form: %s", got)
		}
	}
}

// A spool entry damaged on disk (its checksum fails) is parked in the
// dead-letter file with where it was; the entries before it are
// delivered, and the sink goes on instead of retrying it forever.
func TestDamagedSpoolEntryIsDeadLettered(t *testing.T) {
	dataDir := t.TempDir()
	g, inst := mustBuild(t, `
sources:
  gen: {type: gen, count: 3}
sinks:
  out: {type: mem, inputs: [gen]}
`)
	seed(t, dataDir, g, inst)
	segs, _ := filepath.Glob(filepath.Join(dataDir, "spool", "out", "*.seg"))
	if len(segs) != 1 {
		t.Fatalf("segments %v", segs)
	}
	b, err := os.ReadFile(segs[0])
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(b, []byte("rec-00001"))
	if i < 0 {
		t.Fatal("entry 1 not found in the segment")
	}
	b[i+4] ^= 0xff // inside the middle entry's record
	if err := os.WriteFile(segs[0], b, 0o600); err != nil {
		t.Fatal(err)
	}

	g, inst = mustBuild(t, `
sources:
  gen: {type: gen, count: 0}
sinks:
  out: {type: mem, inputs: [gen]}
`)
	p := core.NewPipeline(g, core.RunOptions{DataDir: dataDir, Logger: quietLogger()})
	if err := p.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := inst.sinks["out"].Got(); !slices.Equal(got, []string{"rec-00000", "rec-00002"}) {
		t.Fatalf("delivered %v", got)
	}
	lines := readDeadLetters(t, filepath.Join(dataDir, "deadletter", "out.jsonl"))
	if len(lines) != 1 || !strings.Contains(lines[0]["where"].(string), "entries 1..1") || lines[0]["raw"] == nil {
		t.Fatalf("dead letters: %v", lines)
	}
	for _, s := range p.Stats() {
		if s.Node == "out" && (s.DeadLettered != 1 || s.PendingRecords != 0) {
			t.Fatalf("stats %+v", s)
		}
	}
}
