package schemas_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/hamba/avro/v2"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/schemas"
	"github.com/fluxstream/fluxstream/sources/replay"
)

type collector struct {
	mu   sync.Mutex
	recs []*core.Record
}

func (c *collector) Emit(_ context.Context, recs []*core.Record, ack func()) error {
	c.mu.Lock()
	c.recs = append(c.recs, recs...)
	c.mu.Unlock()
	ack()
	return nil
}

// records replays a journal and returns what the source emits.
func records(t testing.TB, path, include string) []*core.Record {
	t.Helper()
	nc, err := core.ParseNodeConfig(core.KindSource, "src", []byte("path: "+path+"\nuser_lookup: none\ncluster: test\n"+include))
	if err != nil {
		t.Fatal(err)
	}
	src, err := replay.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	src.(core.Provisioner).Provision(context.Background(), core.NodeContext{Name: "src", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	defer src.(io.Closer).Close()
	c := &collector{}
	if err := src.Run(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	return c.recs
}

// Every record of the scenario survives Avro and back: the decoded record
// has exactly the JSON form of the original.
func TestRoundTrip(t *testing.T) {
	recs := records(t, "embedded:scenario", "include: {jobspec: always, R: always, eventlog: always}\n")
	recs = append(recs, &core.Record{Kind: core.KindInvalid, ID: "invalid:abc", Source: "src",
		Invalid: &core.Invalid{Error: "events[0].timestamp: not a number", Where: "journal response 7", Raw: `{"id":1,"events":[{"timestamp":"x"}]}`}})
	if len(recs) != 382 {
		t.Fatalf("%d records", len(recs))
	}
	for _, r := range recs {
		want, _ := r.JSON()
		for _, format := range []string{schemas.FormatConfluent, schemas.FormatSingleObject} {
			var b []byte
			var err error
			if format == schemas.FormatConfluent {
				b, err = schemas.AppendConfluent(nil, 42, r)
			} else {
				b, err = schemas.AppendSingleObject(nil, r)
			}
			if err != nil {
				t.Fatalf("%s: %v", r.ID, err)
			}
			back, id, err := schemas.Decode(format, b)
			if err != nil {
				t.Fatalf("%s %s: %v", format, r.ID, err)
			}
			if format == schemas.FormatConfluent && id != 42 {
				t.Fatalf("schema id %d", id)
			}
			got, _ := back.MarshalJSON()
			if !bytes.Equal(got, want) {
				t.Fatalf("%s round trip of %s:\n got %s\nwant %s", format, r.ID, got, want)
			}
			// core's own decoder (the spool's) reads the same bytes.
			body := b[5:]
			if format == schemas.FormatSingleObject {
				body = b[10:]
			}
			own, err := core.DecodeAvro(body)
			if err != nil {
				t.Fatalf("core.DecodeAvro %s: %v", r.ID, err)
			}
			if got, _ := own.MarshalJSON(); !bytes.Equal(got, want) {
				t.Fatalf("core.DecodeAvro of %s:\n got %s\nwant %s", r.ID, got, want)
			}
		}
	}
}

// Every key of the JSON form has a field of the same name in the Avro
// schema: a field added to core.Job without the schema fails here.
func TestSchemaCoversTheJSONForm(t *testing.T) {
	rec := schemas.RecordSchema.(*avro.RecordSchema)
	fields := func(rs *avro.RecordSchema) map[string]avro.Schema {
		m := map[string]avro.Schema{}
		for _, f := range rs.Fields() {
			m[f.Name()] = f.Type()
		}
		return m
	}
	inner := func(s avro.Schema) *avro.RecordSchema {
		if u, ok := s.(*avro.UnionSchema); ok {
			for _, t := range u.Types() {
				if r, ok := t.(*avro.RecordSchema); ok {
					return r
				}
			}
		}
		r, _ := s.(*avro.RecordSchema)
		return r
	}
	check := func(typ reflect.Type, rs *avro.RecordSchema, where string) {
		have := fields(rs)
		for i := range typ.NumField() {
			tag, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ",")
			if tag == "" || tag == "-" {
				continue
			}
			if _, ok := have[tag]; !ok {
				t.Errorf("%s.%s (json %q) has no Avro field", where, typ.Field(i).Name, tag)
			}
		}
		if len(have) != countTags(typ) {
			t.Errorf("%s: Avro has %d fields, the JSON form %d", where, len(have), countTags(typ))
		}
	}
	top := fields(rec)
	check(reflect.TypeOf(core.Record{}), rec, "Record")
	job := inner(top["job"])
	check(reflect.TypeOf(core.Job{}), job, "Job")
	jf := fields(job)
	check(reflect.TypeOf(core.Exception{}), inner(jf["exception"]), "Exception")
	check(reflect.TypeOf(core.Requested{}), inner(jf["requested"]), "Requested")
	check(reflect.TypeOf(core.Allocated{}), inner(jf["allocated"]), "Allocated")
	check(reflect.TypeOf(core.Event{}), inner(top["event"]), "Event")
	check(reflect.TypeOf(core.Purge{}), inner(top["purge"]), "Purge")
	check(reflect.TypeOf(core.Invalid{}), inner(top["invalid"]), "Invalid")
}

func countTags(typ reflect.Type) int {
	n := 0
	for i := range typ.NumField() {
		if tag, _, _ := strings.Cut(typ.Field(i).Tag.Get("json"), ","); tag != "" && tag != "-" {
			n++
		}
	}
	return n
}

// Adding an optional field (with a null default) keeps the schema
// compatible both ways: new readers read old data, old readers new data.
// A required field without a default breaks backward compatibility.
func TestEvolution(t *testing.T) {
	v1 := schemas.RecordSchema
	v2 := avro.MustParse(strings.Replace(schemas.RecordAVSC,
		`{"name": "kind", "type": "string", "doc": "event | purge | invalid"},`,
		`{"name": "kind", "type": "string", "doc": "event | purge | invalid"},
    {"name": "site", "type": ["null", "string"], "default": null},`, 1))
	compat := avro.NewSchemaCompatibility()
	if err := compat.Compatible(v2, v1); err != nil {
		t.Fatalf("v2 cannot read v1 data: %v", err)
	}
	if err := compat.Compatible(v1, v2); err != nil {
		t.Fatalf("v1 cannot read v2 data: %v", err)
	}
	// Old data decodes with the new schema, the new field null.
	recs := records(t, "embedded:scenario", "")
	old, _ := schemas.Marshal(recs[0])
	resolved, err := compat.Resolve(v2, v1)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := avro.Unmarshal(resolved, old, &m); err != nil {
		t.Fatal(err)
	}
	if m["site"] != nil || m["id"] != recs[0].ID {
		t.Fatalf("decoded with v2: site=%v id=%v", m["site"], m["id"])
	}
	bad := avro.MustParse(strings.Replace(schemas.RecordAVSC,
		`{"name": "kind", "type": "string", "doc": "event | purge | invalid"},`,
		`{"name": "kind", "type": "string", "doc": "event | purge | invalid"},
    {"name": "site", "type": "string"},`, 1))
	if err := compat.Compatible(bad, v1); err == nil {
		t.Fatal("a required field without default passed as backward compatible")
	}
}

func TestFraming(t *testing.T) {
	r := &core.Record{Kind: core.KindPurge, ID: "1:purge", Purge: &core.Purge{ID: 1, JobID: "f2", Reason: "purge-event"}}
	b, _ := schemas.AppendConfluent(nil, 7, r)
	if !bytes.HasPrefix(b, []byte{0, 0, 0, 0, 7}) {
		t.Fatalf("confluent header % x", b[:5])
	}
	s, _ := schemas.AppendSingleObject(nil, r)
	if !bytes.HasPrefix(s, append([]byte{0xc3, 0x01}, schemas.Fingerprint()...)) {
		t.Fatalf("single-object header % x", s[:10])
	}
	for _, tc := range []struct {
		format string
		in     []byte
		want   string
	}{
		{schemas.FormatConfluent, []byte{1, 0, 0, 0, 7}, "not Confluent wire format"},
		{schemas.FormatSingleObject, []byte{0xc3, 0x02}, "not Avro single-object encoding"},
		{schemas.FormatSingleObject, append([]byte{0xc3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8}, s[10:]...), "schema fingerprint 0102030405060708 is not"},
		{schemas.FormatConfluent, b[:8], "decode avro record: Kind: unexpected EOF"},
		{"xml", b, `unknown encoding "xml"`},
	} {
		if _, _, err := schemas.Decode(tc.format, tc.in); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Decode(%s, % x) = %v, want %q", tc.format, tc.in, err, tc.want)
		}
	}
	if js, err := schemas.DecodeToJSON(&core.Encoded{Format: schemas.FormatConfluent, Value: b}); err != nil || !json.Valid(js) {
		t.Fatalf("DecodeToJSON = %s, %v", js, err)
	}
}

func FuzzDecode(f *testing.F) {
	recs := records(f, "embedded:scenario", "")
	for _, r := range recs[:20] {
		b, _ := schemas.AppendConfluent(nil, 1, r)
		f.Add(b)
	}
	f.Add([]byte{0, 0, 0, 0, 1, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, _, err := schemas.Decode(schemas.FormatConfluent, b)
		if err == nil {
			if _, err := r.MarshalJSON(); err != nil {
				t.Fatalf("decoded record does not encode: %v", err)
			}
		}
	})
}

func BenchmarkEncode(b *testing.B) {
	recs := records(b, "../testdata/flux/journal-bulk2000-live.jsonl.gz", "")
	b.ResetTimer()
	n := 0
	for b.Loop() {
		for _, r := range recs {
			if _, err := schemas.AppendConfluent(nil, 1, r); err != nil {
				b.Fatal(err)
			}
			n++
		}
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
}
