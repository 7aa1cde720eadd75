package anonymize

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"unsafe"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/transforms/filter/recpath"
)

// The single-pass editor: drops at the start, middle and end of objects
// and arrays, everything dropped, whitespace and escapes kept where no
// rule changes them, and untouched JSON handed back as the same bytes.
func TestEditShapes(t *testing.T) {
	tr := newTransform(t, `profile: none
fields:
  jobspec.d: drop
  jobspec.x.*.d: drop
  jobspec.l.0: drop
  jobspec.l.2: drop
  jobspec.h: hash
  jobspec.h.k: keep
  jobspec.n: hash
`)
	h := func(s string) string { return `"` + tr.Pseudonym("", 16, s) + `"` }
	for _, c := range []struct{ in, want string }{
		{`{"a":1,"b":"x"}`, `{"a":1,"b":"x"}`},
		{`{"d":1}`, `{}`},
		{`{"d":1,"a":2}`, `{"a":2}`},
		{`{"a":1,"d":2}`, `{"a":1}`},
		{`{"a":1,"d":2,"b":3}`, `{"a":1,"b":3}`},
		{`{"d":[1,{"h":"s"}],"d":2,"a":3}`, `{"a":3}`},
		{` { "d" : 1 , "a" : "\u00e9" , "d":{} } `, ` { "a" : "\u00e9" } `},
		{`{"x":[{"d":1},{"a":1,"d":2},{"d":3,"a":2}]}`, `{"x":[{},{"a":1},{"a":2}]}`},
		{`{"l":[0,1,2,3]}`, `{"l":[1,3]}`},
		{`{"l":[0]}`, `{"l":[]}`},
		{`{"l":[0,1,2]}`, `{"l":[1]}`},
		{`{"h":{"k":"kept","o":"v\"q","a":["v",7,true,null]}}`, `{"h":{"k":"kept","o":` + h(`v"q`) + `,"a":[` + h("v") + `,` + itoa(tr.PseudoID("7")) + `,true,null]}}`},
		{`{"n":12,"m":12}`, `{"n":` + itoa(tr.PseudoID("12")) + `,"m":12}`},
		{`{"h\u0000":"s","\u0068":"s"}`, `{"h\u0000":"s","\u0068":` + h("s") + `}`},
	} {
		src := json.RawMessage(c.in)
		out, err := tr.raw(src, partJobspec, "")
		if err != nil {
			t.Fatalf("%s: %v", c.in, err)
		}
		if string(out) != c.want {
			t.Errorf("%s:\n got %s\nwant %s", c.in, out, c.want)
		}
		if !json.Valid(out) {
			t.Errorf("%s: invalid JSON out: %s", c.in, out)
		}
		if c.in == c.want && unsafe.SliceData(out) != unsafe.SliceData(src) {
			t.Errorf("%s: unchanged JSON was copied", c.in)
		}
	}
	// Malformed JSON is reported where a rule reaches into it (JSON no
	// rule can reach is passed through unread).
	for _, bad := range []string{`{"d":1`, `{"d":1}x`, `{"h" 1}`, `{"h":"x}`, `{"l":[0,]}`, `["h"`} {
		if _, err := tr.raw(json.RawMessage(bad), partJobspec, ""); !errors.Is(err, recpath.ErrSyntax) {
			t.Errorf("%s: err = %v, want malformed JSON", bad, err)
		}
	}
	// Through Process: the error names the part and the record.
	r := &core.Record{Kind: core.KindEvent, ID: "1:x:2", Jobspec: json.RawMessage(`{"h":1`)}
	if _, err := tr.Process(nil, r); err == nil || !strings.Contains(err.Error(), "anonymize jobspec of 1:x:2: malformed JSON") {
		t.Fatalf("err = %v", err)
	}
}
