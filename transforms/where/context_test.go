package where

import (
	"encoding/json"
	"slices"
	"testing"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/internal/transformtest"
)

// An expression that names its context keys literally has only those
// decoded, and gets what a whole decode gives it; one that reads the
// context whole, by a computed key or through another name has it
// decoded whole.
func TestContextKeys(t *testing.T) {
	recs := transformtest.Records(t, transformtest.Scenario, transformtest.IncludeDefault)
	recs = append(recs,
		ctxRecord(`{"urgency":16,"urgency":31,"note":"a\u00e9","s":"`+"\xff"+`","n":null,"b":true,"x":{"y":[1,"z"]}}`),
		ctxRecord(` { "note" : "plain" , "urgency" : -1.5e3 } `),
		ctxRecord(`null`),
		ctxRecord(`{}`))
	for _, c := range []struct {
		expr string
		keys []string // nil: decoded whole
	}{
		{`event.name in ["submit", "x"] && event.context.urgency > 16`, []string{"urgency"}},
		{`event.context["severity"] == 0 || event.context.urgency == 31`, []string{"severity", "urgency"}},
		{`event.context.note == "a\u00e9" || event.context.note == "plain" || event.context.s == "\ufffd"`, []string{"note", "s"}},
		{`event.context.x?.y?.[1] == "z" || event.context.n == nil && event.context.b == true`, []string{"b", "n", "x"}},
		{`event.context?.urgency == -1500`, []string{"urgency"}},
		{`event.context.annotations?.sched?.resource_summary == "rank0/core0"`, []string{"annotations"}},
		{`"urgency" in event.context`, nil},
		{`len(event.context) == 0 && event.name == "start"`, nil},
		{`event.context[event.name] == nil && event.context.type == "cancel"`, nil},
		{`let e = event; e.context.urgency == 16`, nil},
		{`$env.event.context.urgency == 16`, nil},
	} {
		p, err := Compile(c.expr, DefaultMaxNodes)
		if err != nil {
			t.Fatalf("%s: %v", c.expr, err)
		}
		if !slices.Equal(p.ctxKeys, c.keys) || (p.ctxKeys == nil) != (c.keys == nil) {
			t.Errorf("%s: keys %q, want %q", c.expr, p.ctxKeys, c.keys)
		}
		whole := *p
		whole.ctxKeys = nil
		some, all := NewEvaluator(p), NewEvaluator(&whole)
		if all.keys != nil || all.parts&partContext == 0 {
			t.Fatalf("%s: whole decode not chosen", c.expr)
		}
		trues := 0
		for _, r := range recs {
			var got, want bool
			errGot := some.Eval(r, []*Program{p}, func(_ int, ok bool) { got = ok })
			errWant := all.Eval(r, []*Program{&whole}, func(_ int, ok bool) { want = ok })
			if (errGot == nil) != (errWant == nil) || got != want {
				t.Fatalf("%s on %s (%s): %v %v, decoded whole %v %v", c.expr, r.ID, contextOf(r), got, errGot, want, errWant)
			}
			if got {
				trues++
			}
		}
		if trues == 0 {
			t.Errorf("%s: true on no record: the test tells nothing", c.expr)
		}
	}
	// Programs together: the union of their keys, or whole if one needs it.
	a, _ := Compile(`event.context.urgency > 1`, DefaultMaxNodes)
	b, _ := Compile(`event.context.severity == 0`, DefaultMaxNodes)
	w, _ := Compile(`len(event.context) > 1`, DefaultMaxNodes)
	n, _ := Compile(`event.name == "x"`, DefaultMaxNodes)
	if ev := NewEvaluator(a, b, n); !slices.Equal(ev.keys, []string{"severity", "urgency"}) {
		t.Errorf("keys %q", ev.keys)
	}
	if ev := NewEvaluator(a, w); ev.keys != nil {
		t.Errorf("keys %q, want the whole context", ev.keys)
	}
}

func ctxRecord(ctx string) *core.Record {
	return &core.Record{Kind: core.KindEvent, ID: "1:x:1", Event: &core.Event{Name: "x", Timestamp: 1, Context: json.RawMessage(ctx)}}
}

func contextOf(r *core.Record) string {
	if r.Event == nil {
		return ""
	}
	return string(r.Event.Context)
}
