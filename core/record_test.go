package core_test

import (
	"reflect"
	"testing"

	"github.com/fluxstream/fluxstream/core"
)

// Assigning every field of a derived record and of its job, and changing
// its own event in place, leaves the original as it was; appends to its
// shared slices reallocate.
func TestDeriveOwnsRecordAndJob(t *testing.T) {
	var r core.Record
	n := 0
	fillAll(reflect.ValueOf(&r).Elem(), &n)
	// Room behind the shared slices: an append must not use it.
	r.Eventlog = append(make([]core.Event, 0, len(r.Eventlog)+1), r.Eventlog...)
	r.Job.Dependencies = append(make([]string, 0, len(r.Job.Dependencies)+1), r.Job.Dependencies...)
	r.Jobspec = append(make([]byte, 0, len(r.Jobspec)+1), r.Jobspec...)
	want, _ := r.MarshalJSON()

	c := r.Derive()
	if c.Job == r.Job || c.Event != r.Event {
		t.Fatal("Derive: the job must be the copy's own, the event shared until OwnEvent")
	}
	c.OwnEvent()
	if c.Event == r.Event {
		t.Fatal("OwnEvent kept the shared event")
	}
	_ = append(c.Eventlog, core.Event{Name: "appended"})
	_ = append(c.Job.Dependencies, "appended")
	_ = append(c.Jobspec, '!')
	// In place: the record's and the job's own fields (not through their
	// pointers: those are shared), and everything of the owned event.
	n = 1000
	assignFields(reflect.ValueOf(c).Elem(), &n)
	assignFields(reflect.ValueOf(c.Job).Elem(), &n)
	mutateAll(reflect.ValueOf(c.Event).Elem(), &n)

	if r.Eventlog[:len(r.Eventlog)+1][len(r.Eventlog)].Name != "" || r.Job.Dependencies[:len(r.Job.Dependencies)+1][len(r.Job.Dependencies)] != "" ||
		r.Jobspec[:len(r.Jobspec)+1][len(r.Jobspec)] != 0 {
		t.Fatal("an append to the derived record's slices wrote into the original's memory")
	}
	if got, _ := r.MarshalJSON(); string(got) != string(want) {
		t.Fatalf("changing the derived record changed the original:\n got %s\nwant %s", got, want)
	}
	if got, _ := c.JSON(); string(got) == string(want) {
		t.Fatal("the derived record did not change")
	}
}

// assignFields gives every exported field of the struct v a new value of
// its own (new pointers, new slices), writing nothing through the old ones.
func assignFields(v reflect.Value, n *int) {
	for i := range v.NumField() {
		f := v.Field(i)
		if !v.Type().Field(i).IsExported() {
			continue
		}
		nv := reflect.New(f.Type()).Elem()
		fillAll(nv, n)
		f.Set(nv)
	}
}

// A derived record is one allocation (record and job), whatever the job
// points to.
func BenchmarkDerive(b *testing.B) {
	var r core.Record
	n := 0
	fillAll(reflect.ValueOf(&r).Elem(), &n)
	b.ReportAllocs()
	for b.Loop() {
		_ = r.Derive()
	}
}

func TestDeriveAllocs(t *testing.T) {
	var r core.Record
	n := 0
	fillAll(reflect.ValueOf(&r).Elem(), &n)
	if a := testing.AllocsPerRun(100, func() { _ = r.Derive() }); a != 1 {
		t.Fatalf("Derive: %v allocations, want 1", a)
	}
	r.Encoded, r.Purge, r.Invalid = nil, nil, nil
	r.Eventlog = nil
	r.Job.Dependencies = nil
	if a := testing.AllocsPerRun(100, func() { _ = r.Clone() }); a != 1 {
		t.Fatalf("Clone of a record without eventlog, dependencies or encoded part: %v allocations, want 1", a)
	}
}

// WithEncoded changes only the encoded part: every other field reads as
// the original's, the original keeps its own encoded part, and the copy's
// record-level fields are its own.
func TestWithEncoded(t *testing.T) {
	var r core.Record
	n := 0
	fillAll(reflect.ValueOf(&r).Elem(), &n)
	wantJSON, _ := r.MarshalJSON()
	oldEnc := r.Encoded
	e := &core.Encoded{Format: "avro-x", Value: []byte{1, 2, 3}}
	c := r.WithEncoded(e)
	if c.Encoded != e || r.Encoded != oldEnc {
		t.Fatalf("encoded: copy %p (want %p), original %p (want %p)", c.Encoded, e, r.Encoded, oldEnc)
	}
	if got, _ := c.MarshalJSON(); string(got) != string(wantJSON) {
		t.Fatalf("the copy reads differently:\n got %s\nwant %s", got, wantJSON)
	}
	c.ID, c.Cluster = "other", "other"
	if r.ID == "other" || r.Cluster == "other" {
		t.Fatal("the copy's own fields are the original's")
	}
	if a := testing.AllocsPerRun(100, func() { _ = r.WithEncoded(e) }); a != 1 {
		t.Fatalf("WithEncoded: %v allocations, want 1", a)
	}
}
