package jobstate

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestParseResponse(t *testing.T) {
	line := `{"id":349066756096,"events":[{"timestamp":1795394498.456534,"name":"submit","context":{"userid":6001,"urgency":16,"flags":0,"version":1}},{"timestamp":1795394498.4751775,"name":"validate"}],"jobspec":{"version":1},"R":null,"extra":[1,2]}`
	r, err := ParseResponse([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if r.ID != 349066756096 || r.IsSentinel() {
		t.Errorf("id %d sentinel %v", r.ID, r.IsSentinel())
	}
	if len(r.Events) != 2 {
		t.Fatalf("%d events", len(r.Events))
	}
	e := r.Events[0]
	if e.Name != "submit" || e.Timestamp != 1795394498.456534 ||
		string(e.Context) != `{"userid":6001,"urgency":16,"flags":0,"version":1}` {
		t.Errorf("event 0: %+v %s", e, e.Context)
	}
	if r.Events[1].Name != "validate" || r.Events[1].Context != nil {
		t.Errorf("event 1: %+v", r.Events[1])
	}
	if string(r.Jobspec) != `{"version":1}` || r.R != nil {
		t.Errorf("jobspec %s R %s", r.Jobspec, r.R)
	}

	s, err := ParseResponse([]byte(` {"id":-1,"events":[]} `))
	if err != nil || !s.IsSentinel() || s.Events == nil || len(s.Events) != 0 {
		t.Errorf("sentinel: %+v %v", s, err)
	}

	// Escaped names and keys decode.
	r, err = ParseResponse([]byte(`{"\u0069d":1,"events":[{"name":"de\u0062ug.x","timestamp":1}]}`))
	if err != nil || r.ID != 1 || r.Events[0].Name != "debug.x" {
		t.Errorf("escapes: %+v %v", r, err)
	}
}

func TestParseResponseErrors(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{``, "empty payload"},
		{`[]`, "not a JSON object"},
		{`{"events":[]}`, `"id" is missing`},
		{`{"id":1}`, `"events" is missing`},
		{`{"id":"1","events":[]}`, `"id": want an integer, got a string`},
		{`{"id":1.5,"events":[]}`, `"id": want an integer, got the number 1.5`},
		{`{"id":-2,"events":[]}`, `negative job id -2`},
		{`{"id":99999999999999999999,"events":[]}`, `"id": want an integer`},
		{`{"id":1,"events":{}}`, `"events": want an array, got an object`},
		{`{"id":1,"events":[1]}`, `events[0]: want an object, got the integer 1`},
		{`{"id":1,"events":[{"name":"x","timestamp":1},{"name":"x"}]}`, `events[1].timestamp: missing`},
		{`{"id":1,"events":[{"timestamp":1}]}`, `events[0].name: missing`},
		{`{"id":1,"events":[{"timestamp":"1","name":"x"}]}`, `events[0].timestamp: want a number, got a string`},
		{`{"id":1,"events":[{"timestamp":1e400,"name":"x"}]}`, `events[0].timestamp: number out of range`},
		{`{"id":1,"events":[{"timestamp":1,"name":2}]}`, `events[0].name: want a string, got the integer 2`},
		{`{"id":1,"events":[{"timestamp":1,"name":"x","context":[]}]}`, `events[0].context: want an object, got an array`},
		{`{"id":1,"events":[],"jobspec":"x"}`, `"jobspec": want an object, got a string`},
		{`{"id":1,"events":[],"R":[]}`, `"R": want an object, got an array`},
		{`{"id":1,"events":[]}x`, `data after the object`},
		{`{"id":1,"events":[}`, `invalid JSON at byte 18`},
		{"{\"id\":1,\"events\":[{\"timestamp\":1,\"name\":\"a\x01\"}]}", `control character in string`},
		{`{"id":1,"events":[{"timestamp":01,"name":"a"}]}`, `invalid JSON`},
		{`{"id":1,"events":[],"x":tru}`, `invalid literal`},
		{`{"id":1,"events":[],"x":"\q"}`, `bad escape`},
		{`{"id":1,"events":[],"x":` + strings.Repeat("[", 600) + strings.Repeat("]", 600) + `}`, `nested too deeply`},
	} {
		_, err := ParseResponse([]byte(tc.in))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ParseResponse(%.60q) = %v, want error with %q", tc.in, err, tc.want)
		}
	}
}

// FuzzParseResponse checks that no payload makes the parser or the
// reducer panic, and that what the parser accepts is valid JSON
// everywhere it hands out raw bytes.
func FuzzParseResponse(f *testing.F) {
	for _, name := range []string{
		"journal-scenario-live-full.jsonl",
		"journal-backlog-full-before-purge.jsonl",
		"journal-active-only-not-full.jsonl",
	} {
		for _, l := range readLines(f, name) {
			f.Add(l)
		}
	}
	for _, s := range []string{
		`{"id":-1,"events":[]}`,
		`{"id":1,"events":[{"timestamp":1,"name":"memo","context":{"a":{"b":null}}}]}`,
		`{"id":1,"events":[{"timestamp":1,"name":"jobspec-update","context":{"attributes..x":1,"tasks":null}}],"jobspec":{}}`,
		`{"id":1,"events":[{"timestamp":1,"name":"alloc"}],"R":{"version":1,"execution":{"R_lite":[{"rank":"0-3","children":{"core":"0-1","gpu":"0"}}],"nodelist":["n[1-4]"]}}}`,
		`{"id":1,"events":[{"timestamp":1,"name":"resource-update","context":{"expiration":"x"}}],"R":{"version":1,"execution":{"R_lite":[]}}}`,
		`{"id":1,"events":[{"timestamp":1,"name":"exception","context":{"type":1}}]}`,
		`{"id":1,"events":[{"timestamp":1e400,"name":"finish","context":{"status":1e3}}]}`,
		`{"id":1,"events":[`,
		`{"id":1,"events":[{"timestamp":1,"name":"x","context":{"a":"\ud800"}}]}`,
		`{"id":1,"events":[],"jobspec":{"resources":[{"type":"node","count":2,"with":[{"type":"slot","count":1,"with":[{"type":"core","count":4}]}]}],"tasks":[{"command":["/bin/"],"count":{"total":3}}],"attributes":{"system":{"duration":1,"shell":{"options":{"per-resource":{"type":"core","count":2}}}}},"version":1}}`,
		"\x00",
		`{"id":1,"events":[]} {}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseResponse(b)
		if err != nil {
			return
		}
		for _, raw := range []json.RawMessage{r.Jobspec, r.R} {
			if raw != nil && !json.Valid(raw) {
				t.Fatalf("invalid raw JSON accepted: %q", raw)
			}
		}
		s := New(uint64(r.ID))
		if r.Jobspec != nil {
			_ = s.SetJobspec(r.Jobspec)
		}
		if r.R != nil {
			_ = s.SetR(r.R)
		}
		for _, ev := range r.Events {
			if ev.Context != nil && !json.Valid(ev.Context) {
				t.Fatalf("invalid context accepted: %q", ev.Context)
			}
			_ = s.Apply(ev)
			if _, err := json.Marshal(s.Snapshot()); err != nil {
				t.Fatalf("snapshot does not marshal: %v", err)
			}
		}
		for _, raw := range []json.RawMessage{s.Jobspec(), s.R()} {
			if raw != nil && !json.Valid(raw) {
				t.Fatalf("state keeps invalid JSON: %q", raw)
			}
		}
	})
}

// FuzzApply feeds arbitrary contexts (not checked by ParseResponse) to
// every rule of a job that has a jobspec and an R.
func FuzzApply(f *testing.F) {
	for _, s := range []struct{ name, ctx string }{
		{"jobspec-update", `{"attributes.system.queue":"debug","resources":[1]}`},
		{"resource-update", `{"expiration":1e9}`},
		{"memo", `{"a":{"b":null},"uri":"x"}`},
		{"annotations", `{"annotations":{"user":{"uri":"local:///x"}}}`},
		{"exception", `{"type":"x","severity":0,"note":"\u00e9"}`},
		{"finish", `{"status":9}`},
		{"dependency-add", `{"description":"a"}`},
		{"submit", `{"userid":1,"urgency":1,"version":1}`},
		{"urgency", `{"urgency":3,"userid":1}`},
		{"priority", `{"priority":-5}`},
		{"memo", `{"a":"\`},
		{"alloc", `[`},
	} {
		f.Add(s.name, []byte(s.ctx))
	}
	f.Fuzz(func(t *testing.T, name string, ctx []byte) {
		s := New(7)
		_ = s.SetJobspec(json.RawMessage(testJobspec))
		_ = s.SetR(json.RawMessage(testR))
		for _, e := range []Event{ev(1, "submit", `{"userid":1,"urgency":16,"version":1}`), ev(2, "validate", ""),
			ev(3, "depend", ""), ev(4, "priority", `{"priority":1}`)} {
			_ = s.Apply(e)
		}
		for _, n := range []string{name, "memo", "alloc", name} {
			_ = s.Apply(Event{Timestamp: 5, Name: n, Context: ctx})
			j := s.Snapshot()
			if _, err := json.Marshal(j); err != nil {
				t.Fatalf("snapshot does not marshal: %v", err)
			}
		}
		for _, raw := range []json.RawMessage{s.Jobspec(), s.R()} {
			if raw != nil && !json.Valid(raw) {
				t.Fatalf("state keeps invalid JSON: %q", raw)
			}
		}
	})
}
