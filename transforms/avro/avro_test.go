package avro

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/sr"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/internal/srtest"
	"github.com/fluxstream/fluxstream/schemas"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func newTransform(t *testing.T, yaml string) *Transform {
	t.Helper()
	nc, err := core.ParseNodeConfig(core.KindTransform, "avro", []byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return tr.(*Transform)
}

var rec = &core.Record{Kind: core.KindEvent, ID: "1:submit:2.5", Cluster: "c",
	Event: &core.Event{Name: "submit", Timestamp: 2.5, Context: []byte(`{"userid":6001}`)},
	Job:   &core.Job{ID: 1, JobID: "f2", UserID: 6001, State: "NEW"}}

func TestConfluentWithRegistry(t *testing.T) {
	reg := srtest.New()
	defer reg.Close()
	kv := core.NewMemKV()
	tr := newTransform(t, "registry:\n  urls: ["+reg.URL()+"]\n  subject: flux-jobs-value\n")
	if err := tr.Provision(context.Background(), core.NodeContext{Logger: quiet(), State: kv}); err != nil {
		t.Fatal(err)
	}
	if tr.SchemaID() == 0 {
		t.Fatal("no schema id")
	}
	out, err := tr.Process(context.Background(), rec)
	if err != nil {
		t.Fatal(err)
	}
	enc := out[0].Encoded
	if enc.Format != schemas.FormatConfluent || enc.SchemaID != tr.SchemaID() || rec.Encoded != nil {
		t.Fatalf("encoded %+v (input changed: %v)", enc, rec.Encoded != nil)
	}
	back, id, err := schemas.Decode(enc.Format, enc.Value)
	if err != nil || id != tr.SchemaID() || back.ID != rec.ID {
		t.Fatalf("decoded %v %d %v", back, id, err)
	}

	// The registry goes down: the id remembered from the last start is used.
	reg.Down()
	again := newTransform(t, "registry:\n  urls: ["+reg.URL()+"]\n  subject: flux-jobs-value\n  timeout: 2s\n")
	if err := again.Provision(context.Background(), core.NodeContext{Logger: quiet(), State: kv}); err != nil {
		t.Fatalf("registry down with a remembered id: %v", err)
	}
	if again.SchemaID() != tr.SchemaID() {
		t.Fatalf("remembered id %d, want %d", again.SchemaID(), tr.SchemaID())
	}
	// Without a remembered id, start-up fails with the registry's answer.
	fresh := newTransform(t, "registry:\n  urls: ["+reg.URL()+"]\n  subject: flux-jobs-value\n  timeout: 2s\n")
	err = fresh.Provision(context.Background(), core.NodeContext{Logger: quiet(), State: core.NewMemKV()})
	if err == nil || !strings.Contains(err.Error(), "schema registry ["+reg.URL()+"], subject flux-jobs-value: register:") {
		t.Fatalf("down registry, nothing remembered: %v", err)
	}
	reg.Up()

	// register: false looks up only: a subject without the schema fails.
	lookup := newTransform(t, "registry:\n  urls: ["+reg.URL()+"]\n  subject: other-value\n  register: false\n")
	err = lookup.Provision(context.Background(), core.NodeContext{Logger: quiet(), State: core.NewMemKV()})
	if err == nil || !strings.Contains(err.Error(), "look up (register: false)") {
		t.Fatalf("lookup of a missing schema: %v", err)
	}
}

func TestSingleObject(t *testing.T) {
	tr := newTransform(t, "encoding: single-object\n")
	tr.Provision(context.Background(), core.NodeContext{Logger: quiet()})
	out, err := tr.Process(context.Background(), rec)
	if err != nil {
		t.Fatal(err)
	}
	js, err := schemas.DecodeToJSON(out[0].Encoded)
	want, _ := rec.JSON()
	if err != nil || string(js) != string(want) {
		t.Fatalf("single-object back to JSON: %s %v", js, err)
	}
}

func TestConfigErrors(t *testing.T) {
	nc, _ := core.ParseNodeConfig(core.KindTransform, "avro", []byte("encoding: protobuf\n"))
	if _, err := New(nc); err == nil || !strings.Contains(err.Error(), `transforms.avro.encoding: unknown encoding "protobuf" (confluent, single-object)`) {
		t.Fatalf("err = %v", err)
	}
	nc, _ = core.ParseNodeConfig(core.KindTransform, "avro", []byte("encoding: confluent\n"))
	if _, err := New(nc); err == nil || !strings.Contains(err.Error(), "transforms.avro.registry.urls: the confluent encoding needs a schema registry") {
		t.Fatalf("err = %v", err)
	}
}

// The registry's compatibility rules (BACKWARD, Confluent's default) accept
// the next version of the record schema with an optional field added, and
// refuse one with a required field added.
func TestSchemaEvolutionInRegistry(t *testing.T) {
	reg := srtest.New()
	defer reg.Close()
	tr := newTransform(t, "registry:\n  urls: ["+reg.URL()+"]\n  subject: flux-jobs-value\n")
	if err := tr.Provision(context.Background(), core.NodeContext{Logger: quiet(), State: core.NewMemKV()}); err != nil {
		t.Fatal(err)
	}
	cl, _ := sr.NewClient(sr.URLs(reg.URL()))
	anchor := `{"name": "kind", "type": "string", "doc": "event | purge | invalid"},`
	for _, level := range []sr.CompatibilityLevel{sr.CompatBackward, sr.CompatFull} {
		reg.SetLevel("flux-jobs-value", level)
		optional := strings.Replace(schemas.RecordAVSC, anchor, anchor+`
    {"name": "site_`+strings.ToLower(level.String())+`", "type": ["null", "string"], "default": null},`, 1)
		ss, err := cl.CreateSchema(context.Background(), "flux-jobs-value", sr.Schema{Schema: optional, Type: sr.TypeAvro})
		if err != nil {
			t.Fatalf("%s: optional field refused: %v", level, err)
		}
		if ss.ID == tr.SchemaID() {
			t.Fatalf("%s: new version got the old id", level)
		}
	}
	required := strings.Replace(schemas.RecordAVSC, anchor, anchor+`
    {"name": "site", "type": "string"},`, 1)
	_, err := cl.CreateSchema(context.Background(), "flux-jobs-value", sr.Schema{Schema: required, Type: sr.TypeAvro})
	var re *sr.ResponseError
	if !errors.As(err, &re) || re.ErrorCode != 409 {
		t.Fatalf("required field accepted: %v", err)
	}
	// fluxstream restarted on the old schema keeps its id: the subject has it.
	again := newTransform(t, "registry:\n  urls: ["+reg.URL()+"]\n  subject: flux-jobs-value\n")
	if err := again.Provision(context.Background(), core.NodeContext{Logger: quiet(), State: core.NewMemKV()}); err != nil || again.SchemaID() != tr.SchemaID() {
		t.Fatalf("re-register v1: id %d (was %d), %v", again.SchemaID(), tr.SchemaID(), err)
	}
}
