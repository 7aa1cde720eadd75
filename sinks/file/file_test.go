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
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/hamba/avro/v2"
	"github.com/hamba/avro/v2/ocf"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/internal/crosscheck"
	"github.com/fluxstream/fluxstream/schemas"
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

// format: avro writes Avro object container files that any Avro reader
// takes; appends continue the file; a damaged tail is moved aside.
func TestAvroContainer(t *testing.T) {
	path := filepath.Join(t.TempDir(), "events.avro")
	s := newSink(t, "path: "+path+"\nformat: avro\n")
	all := append(recs(0, 3), &core.Record{Kind: core.KindPurge, ID: "7:purge", Purge: &core.Purge{ID: 7, JobID: "f9", Reason: "purge-event", Time: 1.5}})
	if err := s.Write(context.Background(), all[:2]); err != nil {
		t.Fatal(err)
	}
	s.Close(context.Background())
	s = newSink(t, "path: "+path+"\nformat: avro\n")
	if err := s.Write(context.Background(), all[2:]); err != nil {
		t.Fatal(err)
	}
	s.Close(context.Background())

	got := readOCF(t, path)
	if len(got) != 4 {
		t.Fatalf("%d records in the container", len(got))
	}
	for i, r := range all {
		want, _ := r.JSON()
		if got[i] != string(want) {
			t.Fatalf("record %d:\n got %s\nwant %s", i, got[i], want)
		}
	}

	// A crash mid-block: the file is moved aside, a new one started.
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte{0x08, 0x99, 0x01, 0x02})
	f.Close()
	s = newSink(t, "path: "+path+"\nformat: avro\n")
	if err := s.Write(context.Background(), recs(10, 1)); err != nil {
		t.Fatal(err)
	}
	s.Close(context.Background())
	damaged, _ := filepath.Glob(path[:len(path)-5] + ".*.avro.damaged")
	if len(damaged) != 1 || len(readOCF(t, path)) != 1 {
		t.Fatalf("damaged %v, new file %d records", damaged, len(readOCF(t, path)))
	}
}

func readOCF(t *testing.T, path string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec, err := ocf.NewDecoder(f)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for dec.HasNext() {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			t.Fatal(err)
		}
		// Back through the schema to the record's JSON form.
		b, _ := avro.Marshal(dec.Schema(), m)
		r, err := schemas.Unmarshal(b)
		if err != nil {
			t.Fatal(err)
		}
		js, _ := r.JSON()
		out = append(out, string(js))
	}
	if err := dec.Error(); err != nil {
		t.Fatal(err)
	}
	return out
}

// An independent Avro implementation (Apache Avro for Python, Debian's
// python3-avro) reads the container file: the schema and the data are
// standard Avro, not only what hamba accepts.
func TestAvroContainerReadByApacheAvro(t *testing.T) {
	py := "/usr/bin/python3"
	crosscheck.Need(t, "Apache Avro for Python (Debian's python3-avro)", crosscheck.Run(py, "-c", "import avro.datafile"))
	path := filepath.Join(t.TempDir(), "events.avro")
	s := newSink(t, "path: "+path+"\nformat: avro\n")
	all := recs(0, 5)
	all[2].Job.Name = "naïve ünïcode"
	s.Write(context.Background(), all)
	s.Close(context.Background())
	out, err := exec.Command(py, "-c", `
import sys, json, avro.datafile, avro.io, avro.schema
r = avro.datafile.DataFileReader(open(sys.argv[1], "rb"), avro.io.DatumReader())
print(avro.schema.parse(r.get_meta("avro.schema").decode()).fullname)
for rec in r:
    print(rec["id"], rec["job"]["id"], rec["job"]["name"], json.loads(rec["event"]["context"])["userid"])
`, path).CombinedOutput()
	if err != nil {
		t.Fatalf("python3-avro: %v\n%s", err, out)
	}
	want := "org.fluxstream.Record\n"
	for _, r := range all {
		name := "None"
		if r.Job.Name != "" {
			name = r.Job.Name
		}
		want += fmt.Sprintf("%s %d %s 6001\n", r.ID, r.Job.ID, name)
	}
	if string(out) != want {
		t.Fatalf("python3-avro read:\n%s\nwant:\n%s", out, want)
	}
}

// After an unclean stop a JSON file may end inside a line: it is cut, so
// the next record starts on a line of its own. A gzip file is rotated.
func TestTornTailRepaired(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "events.jsonl")
	s := newSink(t, "path: "+path)
	s.Write(context.Background(), recs(0, 2))
	s.Close(context.Background())
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	f.Write([]byte(`{"kind":"event","id":"torn`))
	f.Close()
	s = newSink(t, "path: "+path)
	s.Write(context.Background(), recs(2, 1))
	s.Close(context.Background())
	lines := readLines(t, path)
	if len(lines) != 3 {
		t.Fatalf("%d lines: %q", len(lines), lines)
	}
	for _, l := range lines {
		if !json.Valid([]byte(l)) {
			t.Fatalf("invalid line %q", l)
		}
	}

	gz := filepath.Join(dir, "events.jsonl.gz")
	s = newSink(t, "path: "+gz+"\ncompression: gzip\n")
	s.Write(context.Background(), recs(0, 2))
	s.Close(context.Background())
	s = newSink(t, "path: "+gz+"\ncompression: gzip\n")
	s.Write(context.Background(), recs(2, 1))
	s.Close(context.Background())
	rotated, _ := filepath.Glob(filepath.Join(dir, "events.*.jsonl.gz"))
	if len(rotated) != 1 || len(readLines(t, rotated[0])) != 2 || len(readLines(t, gz)) != 1 {
		t.Fatalf("gzip restart: rotated %v", rotated)
	}
}
