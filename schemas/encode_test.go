package schemas

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"

	"github.com/hamba/avro/v2"

	"github.com/fluxstream/fluxstream/core"
)

// fill sets every exported field reachable from v to a non-zero value.
func fill(v reflect.Value, n *int) {
	*n++
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), n)
	case reflect.Struct:
		for i := range v.NumField() {
			if f := v.Type().Field(i); f.IsExported() && f.Tag.Get("json") != "-" {
				fill(v.Field(i), n)
			}
		}
	case reflect.String:
		v.SetString("v\u00e9\"" + string(rune('a'+*n%26)))
	case reflect.Int, reflect.Int64:
		v.SetInt(int64(*n) * -3)
	case reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(*n) << 20)
	case reflect.Float64:
		v.SetFloat(float64(*n) + 0.125)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Slice:
		if v.Type() == reflect.TypeOf(json.RawMessage(nil)) {
			v.SetBytes([]byte(`{"n":[1,2.5,"x"]}`))
			return
		}
		s := reflect.MakeSlice(v.Type(), 3, 3)
		for i := range 3 {
			fill(s.Index(i), n)
		}
		v.Set(s)
	}
}

// A record with every field set survives Avro and back, and every field
// of the schema carries a value: a schema field the mapping in core
// forgets (or a record field it drops) fails here.
func TestEveryFieldRoundTrips(t *testing.T) {
	var r core.Record
	n := 0
	fill(reflect.ValueOf(&r).Elem(), &n)
	r.Jobspec, r.R = json.RawMessage(`{"a":1}`), json.RawMessage(`[1]`)
	want, _ := r.JSON()
	b, err := Marshal(&r)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if got, _ := back.JSON(); string(got) != string(want) {
		t.Fatalf("round trip:\n got %s\nwant %s", got, want)
	}
	// Generic decoding sees the schema, not our types: no union is null.
	var generic map[string]any
	if err := avro.Unmarshal(RecordSchema, b, &generic); err != nil {
		t.Fatal(err)
	}
	var walk func(path string, v any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case nil:
			t.Errorf("%s is null: the mapping of core.Record to Avro leaves it out", path)
		case map[string]any:
			for k, x := range v {
				walk(path+"."+k, x)
			}
		case []any:
			for i, x := range v {
				walk(fmt.Sprintf("%s[%d]", path, i), x)
			}
		}
	}
	walk("record", generic)

	// Empty arrays and zero values too.
	z := core.Record{Kind: core.KindEvent, ID: "z", Eventlog: []core.Event{}, Job: &core.Job{Dependencies: []string{}, Requested: &core.Requested{}}}
	b, _ = Marshal(&z)
	back, err = Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := back.JSON()
	want, _ = z.JSON()
	if string(got) != string(want) {
		t.Fatalf("zero record:\n got %s\nwant %s", got, want)
	}
}

// Counts a user controls (65536 slots x 65536 tasks = 2^32 tasks) are Avro
// longs: they encode and decode exactly.
func TestCountsBeyondInt32(t *testing.T) {
	big := 1 << 32
	r := core.Record{Kind: core.KindEvent, ID: "1:submit:1", Job: &core.Job{ID: 1, NTasks: &big, NCores: &big,
		Requested: &core.Requested{NSlots: 1 << 16, NTasks: big, NCores: big, NGPUs: big}}}
	b, err := Marshal(&r)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	if *back.Job.NTasks != big || back.Job.Requested.NTasks != big || back.Job.Requested.NGPUs != big {
		t.Fatalf("counts changed: %+v %+v", back.Job, back.Job.Requested)
	}
}

func BenchmarkMarshal(b *testing.B) {
	var r core.Record
	n := 0
	fill(reflect.ValueOf(&r).Elem(), &n)
	buf := make([]byte, 0, 4096)
	for b.Loop() {
		buf, _ = core.AppendAvro(buf[:0], &r)
	}
}

func BenchmarkUnmarshal(b *testing.B) {
	var r core.Record
	n := 0
	fill(reflect.ValueOf(&r).Elem(), &n)
	body, _ := Marshal(&r)
	for b.Loop() {
		if _, err := core.DecodeAvro(body); err != nil {
			b.Fatal(err)
		}
	}
}

// Decoding reuses its scratch value: a record with every optional field
// empty, decoded right after one with every field set, has none of them.
func TestDecodeLeavesNothingBehind(t *testing.T) {
	var full core.Record
	n := 0
	fill(reflect.ValueOf(&full).Elem(), &n)
	sparse := core.Record{Kind: core.KindEvent, ID: "j:e:1", Job: &core.Job{ID: 1}, Event: &core.Event{Name: "submit"}}
	fullBody, err := Marshal(&full)
	if err != nil {
		t.Fatal(err)
	}
	sparseBody, err := Marshal(&sparse)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := core.DecodeAvro(sparseBody)
	wantJSON, _ := want.MarshalJSON()
	for range 100 {
		a, err := core.DecodeAvro(fullBody)
		if err != nil {
			t.Fatal(err)
		}
		b, err := core.DecodeAvro(sparseBody)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := b.MarshalJSON(); string(got) != string(wantJSON) {
			t.Fatalf("after a full record, the sparse one decodes as\n%s\nwant\n%s", got, wantJSON)
		}
		if a.Job.Dependencies != nil && b.Job.Dependencies != nil && &a.Job.Dependencies[0] == &b.Job.Dependencies[0] {
			t.Fatal("two decoded records share their dependencies")
		}
	}
	// Nothing a decoded record holds is overwritten by the next decode
	// (the scratch is reused): every field of another full record.
	var other core.Record
	fill(reflect.ValueOf(&other).Elem(), &n) // n goes on: other values
	otherBody, err := Marshal(&other)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := core.DecodeAvro(fullBody)
	before, _ := first.MarshalJSON()
	if _, err := core.DecodeAvro(otherBody); err != nil {
		t.Fatal(err)
	}
	if after, _ := first.MarshalJSON(); string(after) != string(before) {
		t.Fatalf("a later decode changed an earlier record:\n now %s\nwas %s", after, before)
	}
}

// FramingLen is where the record's own Avro binary starts in both
// framings: a disk spool stores such a record once, inside the value.
func TestFramingLenFindsTheRecord(t *testing.T) {
	var r core.Record
	n := 0
	fill(reflect.ValueOf(&r).Elem(), &n)
	r.Encoded = nil
	body, _ := core.AppendAvro(nil, &r)
	conf, _ := AppendConfluent(nil, 42, &r)
	single, _ := AppendSingleObject(nil, &r)
	for format, value := range map[string][]byte{FormatConfluent: conf, FormatSingleObject: single} {
		if at := FramingLen(format); string(value[at:]) != string(body) {
			t.Errorf("%s: the record does not start at %d", format, at)
		}
	}
	if FramingLen("json") != 0 {
		t.Error("a format that is not Avro of the record has an offset")
	}
}
