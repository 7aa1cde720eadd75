package srtest

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/sr"
)

const v1 = `{"type":"record","name":"R","fields":[{"name":"id","type":"string"}]}`

func TestCompatibilityEnforced(t *testing.T) {
	r := New()
	defer r.Close()
	cl, err := sr.NewClient(sr.URLs(r.URL()))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s1, err := cl.CreateSchema(ctx, "x-value", sr.Schema{Schema: v1, Type: sr.TypeAvro})
	if err != nil {
		t.Fatal(err)
	}
	// The same schema again: the same id.
	again, err := cl.CreateSchema(ctx, "x-value", sr.Schema{Schema: v1, Type: sr.TypeAvro})
	if err != nil || again.ID != s1.ID {
		t.Fatalf("re-register: %+v %v", again, err)
	}
	optional := `{"type":"record","name":"R","fields":[{"name":"id","type":"string"},{"name":"site","type":["null","string"],"default":null}]}`
	required := `{"type":"record","name":"R","fields":[{"name":"id","type":"string"},{"name":"site","type":"string"}]}`
	res, err := cl.CheckCompatibility(ctx, "x-value", -1, sr.Schema{Schema: required, Type: sr.TypeAvro})
	if err != nil || res.Is {
		t.Fatalf("required field judged compatible: %+v %v", res, err)
	}
	_, err = cl.CreateSchema(ctx, "x-value", sr.Schema{Schema: required, Type: sr.TypeAvro})
	var re *sr.ResponseError
	if !errors.As(err, &re) || re.ErrorCode != 409 || !strings.Contains(re.Message, "incompatible with version 1 under BACKWARD") {
		t.Fatalf("required field registered: %v", err)
	}
	s2, err := cl.CreateSchema(ctx, "x-value", sr.Schema{Schema: optional, Type: sr.TypeAvro})
	if err != nil || s2.Version != 2 || s2.ID == s1.ID {
		t.Fatalf("optional field: %+v %v", s2, err)
	}
	r.SetLevel("x-value", sr.CompatNone)
	if _, err := cl.CreateSchema(ctx, "x-value", sr.Schema{Schema: required, Type: sr.TypeAvro}); err != nil {
		t.Fatalf("NONE refused: %v", err)
	}
	r.Down()
	if _, err := cl.SchemaByID(ctx, s1.ID); err == nil {
		t.Fatal("down registry answered")
	}
}

func TestRequireAuth(t *testing.T) {
	r := New()
	defer r.Close()
	r.RequireAuth("fs", "pw")
	ctx := context.Background()
	schema := sr.Schema{Schema: v1, Type: sr.TypeAvro}
	for _, c := range []struct {
		opts []sr.ClientOpt
		ok   bool
	}{
		{[]sr.ClientOpt{sr.URLs(r.URL())}, false},
		{[]sr.ClientOpt{sr.URLs(r.URL()), sr.BasicAuth("fs", "wrong")}, false},
		{[]sr.ClientOpt{sr.URLs(r.URL()), sr.BasicAuth("fs", "pw")}, true},
	} {
		cl, err := sr.NewClient(c.opts...)
		if err != nil {
			t.Fatal(err)
		}
		_, err = cl.CreateSchema(ctx, "x-value", schema)
		var re *sr.ResponseError
		switch {
		case c.ok && err != nil:
			t.Errorf("right credentials: %v", err)
		case !c.ok && (!errors.As(err, &re) || re.StatusCode != 401 || !strings.Contains(err.Error(), "Unauthorized: credentials")):
			t.Errorf("wrong credentials: %v", err)
		}
	}
}
