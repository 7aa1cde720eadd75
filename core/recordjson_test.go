package core

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// viaReflection is what encoding/json writes for the record's struct tags,
// plus the three empty values flux jobs --json always prints (Job's doc):
// the reference the hand-written encoder must mean the same as.
func viaReflection(t testing.TB, r *Record) []byte {
	t.Helper()
	b, err := reference(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func reference(r *Record) ([]byte, error) {
	b, err := json.Marshal((*recordJSON)(r))
	if err != nil || r.Job == nil {
		return b, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	job := m["job"].(map[string]any)
	for k, empty := range map[string]any{"exception": map[string]any{"occurred": false}, "dependencies": []any{}, "annotations": map[string]any{}} {
		if _, ok := job[k]; !ok {
			job[k] = empty
		}
	}
	return json.Marshal(m)
}

func sameMeaning(t testing.TB, got, want []byte) {
	t.Helper()
	if !json.Valid(got) {
		t.Fatalf("not valid JSON: %s", got)
	}
	var g, w any
	json.Unmarshal(got, &g)
	json.Unmarshal(want, &w)
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("hand-written JSON differs:\n got %s\nwant %s", got, want)
	}
}

// fill sets every field reachable from v to a non-zero value, so a field
// added to the structs but not to the encoder fails the test.
func fill(v reflect.Value, n *int) {
	*n++
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fill(v.Elem(), n)
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() && v.Type().Field(i).Tag.Get("json") != "-" {
				fill(v.Field(i), n)
			}
		}
	case reflect.String:
		v.SetString("s" + strings.Repeat("x", *n%3) + "\"\\\n\t<>&\u2028é")
	case reflect.Int, reflect.Int64:
		v.SetInt(int64(*n))
	case reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(*n))
	case reflect.Float64:
		v.SetFloat(float64(*n) + 0.25)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Slice:
		if v.Type() == reflect.TypeOf(json.RawMessage(nil)) {
			v.SetBytes([]byte(`{"k": [1, 2.5, "<tag>"], "n": null}`))
			return
		}
		s := reflect.MakeSlice(v.Type(), 2, 2)
		fill(s.Index(0), n)
		fill(s.Index(1), n)
		v.Set(s)
	}
}

func TestAppendJSONCoversEveryField(t *testing.T) {
	var r Record
	n := 0
	fill(reflect.ValueOf(&r).Elem(), &n)
	got, _ := r.MarshalJSON()
	sameMeaning(t, got, viaReflection(t, &r))
	if strings.Contains(string(got), "\n") {
		t.Fatal("a newline in a JSON line")
	}

	// Zero values: omitted where the tags say omitempty, kept elsewhere.
	zero := Record{Kind: KindEvent, ID: "x", Event: &Event{}, Job: &Job{Requested: &Requested{}, Allocated: &Allocated{},
		Exception: &Exception{}}, Purge: &Purge{}, Invalid: &Invalid{}}
	got, _ = zero.MarshalJSON()
	sameMeaning(t, got, viaReflection(t, &zero))
	min := Record{}
	got, _ = min.MarshalJSON()
	sameMeaning(t, got, viaReflection(t, &min))
}

func TestAppendFloatAndString(t *testing.T) {
	for _, f := range []float64{0, 1, -1, 1795394498.4565339, 0.1, 1e-7, 1.5e-6, 1e21, 123456789e15, -2.5e-9, 300} {
		r := Record{Event: &Event{Timestamp: f}}
		got, _ := r.MarshalJSON()
		want := viaReflection(t, &r)
		if string(got) != string(want) {
			t.Errorf("%v: got %s want %s", f, got, want)
		}
	}
	for _, s := range []string{"plain", "quote\"back\\slash", "ctl\x01\x1f", "bad utf8 \xff\xfe", "line\u2028sep\u2029", "日本語", "<a&b>"} {
		r := Record{ID: s}
		got, _ := r.MarshalJSON()
		sameMeaning(t, got, viaReflection(t, &r))
	}
}

func FuzzAppendJSON(f *testing.F) {
	f.Add("id", "submit", 1795394498.456534, []byte(`{"userid":6001}`))
	f.Add("\xff", "\u2028", math.Copysign(0, -1), []byte(` { "a" : [ 1 ] } `))
	f.Fuzz(func(t *testing.T, id, name string, ts float64, ctx []byte) {
		if !json.Valid(ctx) {
			ctx = nil
		}
		r := Record{ID: id, Event: &Event{Name: name, Timestamp: ts, Context: ctx}, Job: &Job{Name: name, Nodelist: id}}
		want, err := reference(&r)
		if err != nil {
			return // NaN and friends: encoding/json refuses them
		}
		got, _ := r.MarshalJSON()
		sameMeaning(t, got, want)
	})
}

func BenchmarkRecordJSON(b *testing.B) {
	var r Record
	n := 0
	fill(reflect.ValueOf(&r).Elem(), &n)
	r.Eventlog = nil
	b.Run("hand-written", func(b *testing.B) {
		buf := make([]byte, 0, 4096)
		for b.Loop() {
			buf = r.AppendJSON(buf[:0])
		}
	})
	b.Run("encoding/json", func(b *testing.B) {
		for b.Loop() {
			json.Marshal((*recordJSON)(&r))
		}
	})
}

// A damaged spool entry or a foreign Avro value decodes to an error,
// never a panic or a huge allocation.
func FuzzDecodeAvro(f *testing.F) {
	var r Record
	n := 0
	fill(reflect.ValueOf(&r).Elem(), &n)
	full, _ := AppendAvro(nil, &r)
	f.Add(full)
	purge, _ := AppendAvro(nil, &Record{Kind: KindPurge, ID: "1:purge", Purge: &Purge{ID: 1}})
	f.Add(purge)
	f.Add([]byte{0x02, 'e', 0x7f, 0xff, 0xff, 0xff, 0x0f})
	// The review's 41-byte input: a string length of 2^62 after the kind,
	// which once made the decoder allocate until the process died.
	huge := binary.AppendUvarint([]byte{0x0a, 'e', 'v', 'e', 'n', 't'}, 1<<63)
	f.Add(append(huge, make([]byte, 41-len(huge))...))
	f.Fuzz(func(t *testing.T, b []byte) {
		rec, err := DecodeAvro(b)
		if err != nil {
			return
		}
		// What decodes re-encodes to the same bytes.
		again, err := AppendAvro(nil, rec)
		if err != nil {
			t.Fatalf("decoded record does not encode: %v", err)
		}
		if string(again) != string(b) {
			if _, err := DecodeAvro(again); err != nil {
				t.Fatalf("re-encoded record does not decode: %v", err)
			}
		}
	})
}

func TestSpoolEntryRoundTrip(t *testing.T) {
	var r Record
	n := 0
	fill(reflect.ValueOf(&r).Elem(), &n)
	r.Encoded = &Encoded{Format: "avro-confluent", Value: []byte{0, 0, 0, 0, 7, 1, 2}, SchemaID: 7, Headers: map[string]string{"b": "2", "a": "1"}}
	e, err := appendSpoolEntry(nil, &r)
	if err != nil {
		t.Fatal(err)
	}
	back, err := decodeSpoolEntry(e, spoolMeta)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := r.MarshalJSON()
	got, _ := back.MarshalJSON()
	if string(got) != string(want) || !reflect.DeepEqual(back.Encoded, r.Encoded) {
		t.Fatalf("spool round trip:\n got %s %+v\nwant %s %+v", got, back.Encoded, want, r.Encoded)
	}
	for i := range e {
		if _, err := decodeSpoolEntry(e[:i], spoolMeta); err == nil && i < len(e) {
			t.Fatalf("entry cut at %d of %d decoded", i, len(e))
		}
	}
}

// Transforms clone every record they change: keep Clone to a few
// allocations (the record with its event, the job with its pointees).
func BenchmarkClone(b *testing.B) {
	var r Record
	n := 0
	fill(reflect.ValueOf(&r).Elem(), &n)
	b.ReportAllocs()
	for b.Loop() {
		_ = r.Clone()
	}
}

// A record whose encoder wrote its own Avro binary is spooled once: the
// entry holds the encoder's bytes and is read back from them, equal in
// every field; cut or wrong offsets are refused, never misread.
func TestSpoolEntryRecordInsideEncoded(t *testing.T) {
	var r Record
	n := 0
	fill(reflect.ValueOf(&r).Elem(), &n)
	r.Encoded = nil
	body, err := AppendAvro(nil, &r)
	if err != nil {
		t.Fatal(err)
	}
	for _, frame := range [][]byte{{0, 0, 0, 0, 7}, {0xc3, 0x01, 1, 2, 3, 4, 5, 6, 7, 8}} {
		r.Encoded = &Encoded{Format: "avro-x", Value: append(slices.Clone(frame), body...), SchemaID: 7,
			Headers: map[string]string{"a": "1"}, RecordAt: len(frame)}
		e, err := appendSpoolEntry(nil, &r)
		if err != nil {
			t.Fatal(err)
		}
		if e[0] != spoolEntryV2 || len(e) > len(r.Encoded.Value)+64 {
			t.Fatalf("entry of %d bytes (version %d) for %d encoded bytes: the record is stored twice", len(e), e[0], len(r.Encoded.Value))
		}
		back, err := decodeSpoolEntry(e, spoolMeta)
		if err != nil {
			t.Fatal(err)
		}
		want, _ := r.MarshalJSON()
		got, _ := back.MarshalJSON()
		if string(got) != string(want) || !reflect.DeepEqual(back.Encoded, r.Encoded) {
			t.Fatalf("spool round trip:\n got %s %+v\nwant %s %+v", got, back.Encoded, want, r.Encoded)
		}
		for i := range e {
			if _, err := decodeSpoolEntry(e[:i], spoolMeta); err == nil {
				t.Fatalf("entry cut at %d of %d decoded", i, len(e))
			}
		}
		bad := slices.Clone(e)
		bad[len(bad)-1] = 0 // no offset
		if _, err := decodeSpoolEntry(bad, spoolMeta); err == nil || !strings.Contains(err.Error(), "record offset") {
			t.Fatalf("offset 0: %v", err)
		}
	}
}
