package core

import (
	"bufio"
	"compress/gzip"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hamba/avro/v2"

	"github.com/fluxstream/fluxstream/core/spool"
	"github.com/fluxstream/fluxstream/schemas/avrorec"
)

// A spool written by the first milestone's build (testdata/spool-v1: the
// embedded scenario plus a job with 2^32 tasks, left behind by a sink that
// was down) drains after the upgrade: every entry decodes to the record
// that build would have sent, the 2^32 counts included.
func TestSpoolWrittenByFirstMilestoneDrains(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"00000000000000000000.seg"} {
		b, err := os.ReadFile(filepath.Join("testdata", "spool-v1", name))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	sp, err := spool.Open(dir, spool.Options{Meta: spoolMeta})
	if err != nil {
		t.Fatal(err)
	}
	defer sp.Close()
	entries, err := sp.Read(0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	want := expectedV1(t)
	if len(entries) != len(want) {
		t.Fatalf("%d entries, want %d", len(entries), len(want))
	}
	for i, e := range entries {
		if e.Meta != nil {
			t.Fatalf("entry %d of a first-milestone segment has meta %q", i, e.Meta)
		}
		r, err := decodeSpoolEntry(e.Data, e.Meta)
		if err != nil {
			t.Fatalf("entry %d: %v", i, err)
		}
		got, _ := r.MarshalJSON()
		if string(got) != want[i] {
			t.Fatalf("entry %d:\n got %s\nwant %s", i, got, want[i])
		}
	}
}

// expectedV1 is what the first milestone's dry-run printed for the same
// journal, re-encoded in today's JSON form.
func expectedV1(t *testing.T) []string {
	f, err := os.Open(filepath.Join("testdata", "spool-v1", "expected.jsonl.gz"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	sc := bufio.NewScanner(zr)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatal(err)
		}
		b, _ := r.MarshalJSON()
		out = append(out, string(b))
	}
	return out
}

// An entry written under an older schema (here: one without job.uri, as
// if that field were added since) is read through Avro schema resolution:
// the new field gets its default, the rest is exact.
func TestSpoolEntryOfOlderSchemaResolves(t *testing.T) {
	old := strings.Replace(avrorec.AVSC, `{"name": "uri", "type": ["null", "string"], "default": null, "doc": "URI of a Flux instance job."},`, "", 1)
	if old == avrorec.AVSC {
		t.Fatal("test schema edit did not apply")
	}
	oldSchema := avro.MustParse(old)
	meta := binary.BigEndian.AppendUint64(nil, avrorec.Fingerprint(oldSchema))
	meta = append(meta, old...)

	state, name, ts := "NEW", "x", 1.5
	uri := "local:///tmp/never-written"
	rec := &avrorec.Record{Kind: "event", ID: "7:submit:1.5", Event: &avrorec.Event{Timestamp: 1.5, Name: "submit"},
		Job: &avrorec.Job{ID: 7, Jobid: "f8", Userid: 6001, Urgency: 16, State: &state, Name: &name, TSubmit: &ts, URI: &uri}}
	body, err := avro.Marshal(oldSchema, rec) // the old schema has no uri: it is not written
	if err != nil {
		t.Fatal(err)
	}
	entry := append([]byte{spoolEntryV1, 0}, body...)
	r, err := decodeSpoolEntry(entry, meta)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := r.MarshalJSON()
	want := `{"kind":"event","id":"7:submit:1.5","event":{"timestamp":1.5,"name":"submit"},"job":{"id":7,"jobid":"f8","userid":6001,"urgency":16,"state":"NEW","name":"x","exception":{"occurred":false},"t_submit":1.5,"dependencies":[],"annotations":{}}}`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
	// A header whose schema does not match its fingerprint is refused.
	bad := append(binary.BigEndian.AppendUint64(nil, 42), old...)
	if _, err := decodeSpoolEntry(entry, bad); err == nil || !strings.Contains(err.Error(), "fingerprint") {
		t.Fatalf("mismatched header: %v", err)
	}
}
