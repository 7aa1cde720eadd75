package anonymize

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/internal/transformtest"
)

func quiet() *slog.Logger { return transformtest.Quiet() }

const testKey = "0123456789abcdef0123456789abcdef"

// newTransform builds the transform from YAML and provisions it with a key
// file holding testKey.
func newTransform(t testing.TB, yaml string) *Transform {
	t.Helper()
	kf := filepath.Join(t.TempDir(), "anon.key")
	if err := os.WriteFile(kf, []byte(testKey+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	nc, err := core.ParseNodeConfig(core.KindTransform, "anon", []byte("key_file: "+kf+"\n"+yaml))
	if err != nil {
		t.Fatal(err)
	}
	tr, err := New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := tr.(*Transform).Provision(context.Background(), core.NodeContext{Name: "anon", Logger: quiet()}); err != nil {
		t.Fatal(err)
	}
	return tr.(*Transform)
}

const includeAll = transformtest.IncludeAll

// records replays a journal and returns what the source emits, each
// job's user named fluxuser (uid 6001, as on the machine that recorded
// the fixtures).
func records(t testing.TB, path, include string) []*core.Record {
	t.Helper()
	recs := transformtest.Records(t, path, include)
	for _, r := range recs {
		if r.Job != nil && r.Job.UserID == 6001 {
			r.Job.Username = "fluxuser"
		}
	}
	return recs
}

var fixtures = []string{transformtest.Scenario, transformtest.Backlog, transformtest.Bulk}

// personal collects what names the person in the fixtures: the user's
// name and uid, and from every jobspec the cwd, the job name and each
// command word, and the values of memos (they land in annotations.user).
type personal struct {
	strs map[string]bool // values that must not appear as a string
	long []string        // values that must not appear inside any string
}

func personalValues(t testing.TB, recs []*core.Record) personal {
	p := personal{strs: map[string]bool{"fluxuser": true, "6001": true}}
	add := func(s string) {
		if s == "" {
			return
		}
		p.strs[s] = true
	}
	for _, r := range recs {
		if len(r.Jobspec) > 0 {
			var js struct {
				Tasks []struct {
					Command []string `json:"command"`
				} `json:"tasks"`
				Attributes struct {
					System struct {
						Cwd string `json:"cwd"`
						Job struct {
							Name string `json:"name"`
						} `json:"job"`
					} `json:"system"`
				} `json:"attributes"`
			}
			if err := json.Unmarshal(r.Jobspec, &js); err != nil {
				t.Fatal(err)
			}
			add(js.Attributes.System.Cwd)
			add(js.Attributes.System.Job.Name)
			for _, task := range js.Tasks {
				add(strings.Join(task.Command, " "))
				for _, w := range task.Command {
					add(w)
				}
			}
		}
		if r.Job != nil {
			add(r.Job.Name)
			add(r.Job.Cwd)
		}
		if r.Event != nil && r.Event.Name == "memo" {
			var m map[string]any
			json.Unmarshal(r.Event.Context, &m)
			for _, v := range m {
				if s, ok := v.(string); ok {
					add(s)
				}
			}
		}
	}
	for s := range p.strs {
		if len(s) >= 6 {
			p.long = append(p.long, s)
		}
	}
	return p
}

// check walks a decoded JSON value and reports every personal value in it:
// a string equal to one, a string holding a long one, the number 6001.
func (p personal) check(v any, path string, report func(path, what string)) {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			if p.strs[k] && len(k) >= 6 {
				report(path+"."+k, "key "+k)
			}
			p.check(e, path+"."+k, report)
		}
	case []any:
		for i, e := range t {
			p.check(e, path+"."+strconv.Itoa(i), report)
		}
	case string:
		if p.strs[t] {
			report(path, t)
			return
		}
		for _, l := range p.long {
			if strings.Contains(t, l) {
				report(path, t)
				return
			}
		}
		// Flux's JSON travels as text in Avro: look inside.
		if len(t) > 1 && (t[0] == '{' || t[0] == '[') {
			var inner any
			if json.Unmarshal([]byte(t), &inner) == nil {
				p.check(inner, path+"(json)", report)
			}
		}
	case json.Number:
		if t.String() == "6001" {
			report(path, "6001")
		}
	case float64:
		if t == 6001 {
			report(path, "6001")
		}
	}
}

// checkJSON decodes b (one JSON document) and checks it.
func (p personal) checkJSON(t testing.TB, where string, b []byte) {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("%s: %v: %s", where, err, b)
	}
	n := 0
	p.check(v, "", func(path, what string) {
		if n++; n <= 5 {
			t.Errorf("%s: personal value %q at %s", where, what, path)
		}
	})
}

// checkBytes looks for personal values in binary data (spools, Avro):
// as Avro strings (zigzag length, bytes), as JSON strings, and the long
// ones anywhere.
func (p personal) checkBytes(t testing.TB, where string, b []byte) {
	t.Helper()
	s := string(b)
	for v := range p.strs {
		if strings.Contains(s, `"`+v+`"`) || (len(v) >= 3 && strings.Contains(s, avroString(v))) {
			t.Errorf("%s: holds %q", where, v)
		}
	}
	for _, v := range p.long {
		if strings.Contains(s, v) {
			t.Errorf("%s: holds %q", where, v)
		}
	}
	if strings.Contains(s, `"userid":6001`) {
		t.Errorf("%s: holds userid 6001", where)
	}
}

func avroString(s string) string {
	n := uint64(len(s)) << 1
	var b []byte
	for n >= 0x80 {
		b = append(b, byte(n)|0x80)
		n >>= 7
	}
	return string(append(b, byte(n))) + s
}

func hmacHex(key, msg string) string {
	m := hmac.New(sha256.New, []byte(key))
	m.Write([]byte(msg))
	return hex.EncodeToString(m.Sum(nil))
}
