package recpath

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestGlob(t *testing.T) {
	for _, c := range []struct {
		seg, key string
		want     bool
	}{
		{"*", "anything", true}, {"t_*", "t_submit", true}, {"t_*", "state", false},
		{"*_time", "start_time", true}, {"a*c*e", "abcde", true}, {"a*c*e", "abcd", false},
		{"name", "name", true}, {"name", "names", false}, {"*x*", "x", true},
	} {
		if got := Glob(c.seg, c.key); got != c.want {
			t.Errorf("Glob(%q, %q) = %v", c.seg, c.key, got)
		}
	}
}

func mustSet(t testing.TB, paths ...string) *Set {
	var pats []Pattern
	for _, p := range paths {
		pat, err := Parse(p)
		if err != nil {
			t.Fatal(err)
		}
		pats = append(pats, pat)
	}
	s, err := Compile(pats)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// reference removes what "a.*" and "*.b" match, on decoded JSON.
func reference(v any, depth int, parentA bool) any {
	switch t := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range t {
			if (parentA && depth == 1) || (depth == 1 && k == "b") {
				continue
			}
			out[k] = reference(e, depth+1, depth == 0 && k == "a")
		}
		return out
	case []any:
		out := []any{}
		for _, e := range t {
			if (parentA && depth == 1) || (depth == 1 && false) {
				continue
			}
			out = append(out, reference(e, depth+1, false))
		}
		return out
	}
	return v
}

// The byte-level pruner agrees with a decode-edit-encode reference, and
// keeps valid JSON, on any valid input.
func FuzzPrune(f *testing.F) {
	for _, s := range []string{`{"a":{"x":1,"y":[1,2]},"c":{"b":2,"d":"\"q\""},"b":3}`, `{"a":[{"b":1},2]}`, `[1,{"b":2}]`, `"s"`, `{}`, `{"a\u0041":1,"c":{"b":[]}}`} {
		f.Add([]byte(s))
	}
	p := &Pruner{Exclude: mustSet(f, "a.*", "*.b")}
	f.Fuzz(func(t *testing.T, in []byte) {
		if !json.Valid(in) {
			return
		}
		out, kept, err := p.Prune(in, Start{Exc: p.Exclude.Start(), KeepAll: true})
		if err != nil || !kept {
			t.Fatalf("%s: %v %v", in, kept, err)
		}
		if !json.Valid(out) {
			t.Fatalf("%s -> invalid %s", in, out)
		}
		var v, w any
		json.Unmarshal(in, &v)
		json.Unmarshal(out, &w)
		want, _ := json.Marshal(reference(v, 0, false))
		got, _ := json.Marshal(w)
		if !bytes.Equal(want, got) {
			t.Fatalf("%s:\n got %s\nwant %s", in, got, want)
		}
	})
}

// Mentions rules out JSON only when a key the rest of every live pattern
// needs is missing; indexes and globs need nothing; escapes rule nothing
// out.
func TestMentions(t *testing.T) {
	s := mustSet(t, "context.*.userid", "context.*.annotations.user", "jobspec.tasks.0.command", "jobspec.attributes.user*.x")
	at := func(path ...string) State {
		st := s.Start()
		for _, p := range path {
			st, _ = s.Step(st, p)
		}
		return st
	}
	for _, c := range []struct {
		st   State
		src  string
		want bool
	}{
		{at("context", "submit"), `{"userid":6001,"urgency":16}`, true},
		{at("context", "start"), `{}`, false},
		{at("context", "annotations"), `{"annotations":{"sched":{"t_estimate":1}}}`, false},
		{at("context", "annotations"), `{"annotations":{"user":{"x":1}}}`, true},
		{at("context", "annotations"), `{"annotations":{"sched":{"note":"us\u0065rid"}}}`, true},
		{at("jobspec"), `{"tasks":[{"command":["a"]}]}`, true},
		{at("jobspec"), `{"tasks":[{"slot":"task"}]}`, false},
		{at("jobspec"), `{"attributes":{"user_data":{"x":1}}}`, true},
		{at("jobspec"), `{"attributes":{"system":{}}}`, false},
	} {
		if got := s.Mentions(c.st, []byte(c.src)); got != c.want {
			t.Errorf("Mentions(%s) = %v, want %v", c.src, got, c.want)
		}
	}
}

// includeReference keeps what "a.x" and "*.b" match, on decoded JSON
// (nil: nothing kept); containers left empty go.
func includeReference(v any) any {
	pick := func(e any, keys ...string) any {
		m, ok := e.(map[string]any)
		if !ok {
			return nil
		}
		out := map[string]any{}
		for _, k := range keys {
			if x, ok := m[k]; ok {
				out[k] = x
			}
		}
		if len(out) == 0 {
			return nil
		}
		return out
	}
	switch t := v.(type) {
	case map[string]any:
		out := map[string]any{}
		for k, e := range t {
			keys := []string{"b"}
			if k == "a" {
				keys = append(keys, "x")
			}
			if x := pick(e, keys...); x != nil {
				out[k] = x
			}
		}
		if len(out) > 0 {
			return out
		}
	case []any:
		var out []any
		for _, e := range t {
			if x := pick(e, "b"); x != nil {
				out = append(out, x)
			}
		}
		if len(out) > 0 {
			return out
		}
	}
	return nil
}

// With an include set too: what nothing matched goes, containers left
// empty go, and the rest is the source's bytes.
func FuzzPruneInclude(f *testing.F) {
	for _, s := range []string{`{"a":{"x":1,"y":[1,2],"b":{}},"c":{"b":2,"d":"\"q\""},"b":3}`, `[{"b":1},2,{"c":1},{"b":[3]}]`, `{"a":{}}`, `"s"`, `{}`, `{"a":{"\u0078":1},"c":{"b":[]}}`, ` { "c" : { "d" : 1 , "b" : 2 } } `} {
		f.Add([]byte(s))
	}
	p := &Pruner{Include: mustSet(f, "a.x", "*.b")}
	f.Fuzz(func(t *testing.T, in []byte) {
		if !json.Valid(in) {
			return
		}
		out, kept, err := p.Prune(in, Start{Inc: p.Include.Start()})
		if err != nil {
			t.Fatalf("%s: %v", in, err)
		}
		var v any
		json.Unmarshal(in, &v)
		ref := includeReference(v)
		if !kept {
			if ref != nil {
				t.Fatalf("%s: nothing kept, want %v", in, ref)
			}
			return
		}
		if !json.Valid(out) {
			t.Fatalf("%s -> invalid %s", in, out)
		}
		var w any
		json.Unmarshal(out, &w)
		want, _ := json.Marshal(ref)
		got, _ := json.Marshal(w)
		if !bytes.Equal(want, got) {
			t.Fatalf("%s:\n got %s\nwant %s", in, got, want)
		}
	})
}

// Unchanged JSON comes back as the very same bytes.
func TestPruneShares(t *testing.T) {
	p := &Pruner{Exclude: mustSet(t, "a.*", "*.b")}
	in := []byte(`{"c":{"d":1},"a":[]}`)
	out, kept, err := p.Prune(in, Start{Exc: p.Exclude.Start(), KeepAll: true})
	if err != nil || !kept || &out[0] != &in[0] || len(out) != len(in) {
		t.Fatalf("%s %v %v", out, kept, err)
	}
	if out, _, _ := p.Prune([]byte(` {"a":{"x":1} , "c":{"b":2,"d":3}} `), Start{Exc: p.Exclude.Start(), KeepAll: true}); string(out) != ` {"a":{} , "c":{"d":3}} ` {
		t.Fatalf("got %s", out)
	}
}

// StringEnd on short and long strings, escapes before and after the
// first 16 bytes, an escaped quote and backslash, and unterminated ones.
func TestStringEnd(t *testing.T) {
	long := strings.Repeat("x", 40)
	for _, c := range []struct {
		in  string
		end int // -1: an error
		esc bool
	}{
		{`""`, 2, false}, {`"abc",`, 5, false}, {`"` + long + `"]`, 42, false},
		{`"a\"b"`, 6, true}, {`"a\\"b"`, 5, true}, {`"` + long + `\"x"`, 45, true}, {`"` + long + `\\"`, 44, true},
		{`"\u0041` + long + `"`, 48, true},
		{`"abc`, -1, false}, {`"` + long, -1, false}, {`"a\"`, -1, false}, {`"` + long + `\"`, -1, false}, {`"\`, -1, false},
	} {
		end, esc, err := StringEnd([]byte(c.in), 0)
		if c.end < 0 {
			if err == nil {
				t.Errorf("%s: no error", c.in)
			}
			continue
		}
		if err != nil || end != c.end || esc != c.esc {
			t.Errorf("%s: %d %v %v, want %d %v", c.in, end, esc, err, c.end, c.esc)
		}
	}
}
