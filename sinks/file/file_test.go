package file

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core"
)

func newSink(t *testing.T, yaml string) *Sink {
	t.Helper()
	nc, err := core.ParseNodeConfig(core.KindSink, "out", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	s, err := New(nc)
	if err != nil {
		t.Fatal(err)
	}
	fs := s.(*Sink)
	if err := fs.Provision(context.Background(), core.NodeContext{Name: "out", Logger: quiet()}); err != nil {
		t.Fatal(err)
	}
	return fs
}

func recs(from, n int) []*core.Record {
	out := make([]*core.Record, n)
	for i := range out {
		id := uint64(349066756096 + from + i)
		out[i] = &core.Record{Kind: core.KindEvent, ID: core.EventID(id, "submit", 1795394498.456534),
			Event: &core.Event{Name: "submit", Timestamp: 1795394498.456534, Context: json.RawMessage(`{"userid":6001}`)},
			Job:   &core.Job{ID: id}}
	}
	return out
}

func readLines(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		r = zr
	}
	var out []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestJSONLinesAppend(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "events.jsonl")
	s := newSink(t, "path: "+path)
	if err := s.Write(context.Background(), recs(0, 3)); err != nil {
		t.Fatal(err)
	}
	s.Close(context.Background())
	s = newSink(t, "path: "+path)
	s.Write(context.Background(), recs(3, 2))
	s.Close(context.Background())
	lines := readLines(t, path)
	if len(lines) != 5 {
		t.Fatalf("%d lines", len(lines))
	}
	want := `{"kind":"event","id":"349066756096:submit:1795394498.456534","event":{"timestamp":1795394498.456534,"name":"submit","context":{"userid":6001}},"job":{"id":349066756096}}`
	if !strings.HasPrefix(lines[0], want[:60]) {
		t.Errorf("first line %s", lines[0])
	}
	for i, l := range lines {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("line %d: %v", i, err)
		}
		if m["id"] != fmt.Sprintf("%d:submit:1795394498.456534", 349066756096+i) {
			t.Errorf("line %d id %v", i, m["id"])
		}
	}
}

func TestRotationAndRetention(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "events.jsonl.gz")
	s := newSink(t, fmt.Sprintf("path: %s\ncompression: gzip\nrotate: {max_bytes: 1KiB, interval: 1h, max_files: 3}\n", path))
	now := time.Date(2026, 11, 25, 7, 0, 0, 0, time.UTC)
	s.now = func() time.Time { return now }
	for i := range 10 {
		now = now.Add(time.Second)
		if err := s.Write(context.Background(), recs(i*10, 10)); err != nil {
			t.Fatal(err)
		}
	}
	now = now.Add(2 * time.Hour) // time rotation too
	s.Write(context.Background(), recs(100, 1))
	s.Close(context.Background())

	rotated, _ := filepath.Glob(filepath.Join(dir, "events.*.jsonl.gz"))
	sort.Strings(rotated)
	if len(rotated) != 3 {
		t.Fatalf("rotated files kept: %v", rotated)
	}
	if filepath.Base(rotated[2]) != "events.2026-11-25T09-00-10.000Z.jsonl.gz" {
		t.Errorf("newest rotated name %s", filepath.Base(rotated[2]))
	}
	// Each rotated file holds whole batches; the newest ones survive.
	total := 0
	for _, f := range append(rotated, path) {
		total += len(readLines(t, f))
	}
	if got := readLines(t, path); len(got) != 1 || !strings.Contains(got[0], "349066756196") {
		t.Errorf("active file %v", got)
	}
	if total < 31 {
		t.Errorf("only %d records in kept files", total)
	}
}

// A destination that is down (here: its directory cannot be created)
// fails the write; the runtime retries, and the sink recovers.
func TestDownThenUp(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "mnt")
	os.WriteFile(blocker, []byte("not a directory"), 0o600)
	path := filepath.Join(blocker, "out", "events.jsonl")
	s := newSink(t, "path: "+path)
	err := s.Write(context.Background(), recs(0, 2))
	if err == nil || !strings.Contains(err.Error(), "create directory for "+path) {
		t.Fatalf("write to a missing mount: %v", err)
	}
	if core.IsPermanent(err) {
		t.Fatal("a down destination is not a permanent error")
	}
	os.Remove(blocker)
	if err := s.Write(context.Background(), recs(0, 2)); err != nil {
		t.Fatal(err)
	}
	s.Close(context.Background())
	if n := len(readLines(t, path)); n != 2 {
		t.Fatalf("%d lines after recovery", n)
	}
}

func TestConfigErrors(t *testing.T) {
	nc, _ := core.ParseNodeConfig(core.KindSink, "out", []byte("format: xml\ncompression: zip\nfsync: sometimes\npath: ''\nrotat: {}\n"))
	_, err := New(nc)
	want := `out.yaml:1: sinks.out.format: unknown format "xml" (json, avro)
out.yaml:2: sinks.out.compression: unknown compression "zip" (none, gzip)
out.yaml:3: sinks.out.fsync: unknown policy "sometimes" (batch, interval, never)
out.yaml:4: sinks.out.path: must be set
out.yaml:5: sinks.out.rotat: unknown key (did you mean "rotate"?)`
	if err == nil || err.Error() != want {
		t.Fatalf("err = %v", err)
	}
	nc, _ = core.ParseNodeConfig(core.KindSink, "out", []byte("format: xml\ncompression: zip\nfsync: sometimes\n"))
	_, err = New(nc)
	for _, w := range []string{
		`sinks.out.path: must be set`,
		`sinks.out.format: unknown format "xml" (json, avro)`,
		`sinks.out.compression: unknown compression "zip" (none, gzip)`,
		`sinks.out.fsync: unknown policy "sometimes" (batch, interval, never)`,
	} {
		if err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("err = %v, want %q", err, w)
		}
	}
}

func BenchmarkWrite(b *testing.B) {
	path := filepath.Join(b.TempDir(), "events.jsonl")
	nc, _ := core.ParseNodeConfig(core.KindSink, "out", []byte("path: "+path))
	s, _ := New(nc)
	fs := s.(*Sink)
	fs.Provision(context.Background(), core.NodeContext{Logger: quiet()})
	batch := recs(0, 1000)
	for _, r := range batch {
		r.JSON()
	}
	for b.Loop() {
		fs.Write(context.Background(), batch)
	}
	b.ReportMetric(float64(b.N*len(batch))/b.Elapsed().Seconds(), "records/s")
	var buf bytes.Buffer
	_ = buf
}
