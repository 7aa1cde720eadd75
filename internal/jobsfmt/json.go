package jobsfmt

import (
	"bytes"
	"encoding/json"
	"io"
	"sort"
	"strconv"
	"strings"
	"unicode/utf16"
)

// Python's json.dumps with its defaults: ", " and ": " separators,
// ensure_ascii, floats as repr, keys in their original order.

func pyString(b *strings.Builder, s string) {
	b.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			b.WriteString(`\"`)
		case '\\':
			b.WriteString(`\\`)
		case '\n':
			b.WriteString(`\n`)
		case '\r':
			b.WriteString(`\r`)
		case '\t':
			b.WriteString(`\t`)
		case '\b':
			b.WriteString(`\b`)
		case '\f':
			b.WriteString(`\f`)
		default:
			switch {
			case r < 0x20 || (r >= 0x7f && r < 0x10000):
				if r < 0x7f {
					b.WriteString(`\u00` + strconv.FormatInt(int64(r)>>4&0xf, 16) + strconv.FormatInt(int64(r)&0xf, 16))
				} else if r == 0x7f {
					b.WriteRune(r)
				} else {
					b.WriteString(hex4(r))
				}
			case r >= 0x10000:
				r1, r2 := utf16.EncodeRune(r)
				b.WriteString(hex4(r1) + hex4(r2))
			default:
				b.WriteRune(r)
			}
		}
	}
	b.WriteByte('"')
}

func hex4(r rune) string {
	s := strconv.FormatInt(int64(r), 16)
	return `\u` + strings.Repeat("0", 4-len(s)) + s
}

// pyJSON encodes a decoded value (maps with sorted keys).
func pyJSON(v any) string {
	var b strings.Builder
	writePy(&b, v)
	return b.String()
}

func writePy(b *strings.Builder, v any) {
	switch x := v.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		b.WriteString(strconv.FormatBool(x))
	case string:
		pyString(b, x)
	case json.Number:
		writeNumber(b, string(x))
	case float64:
		b.WriteString(pyRepr(x))
	case int64:
		b.WriteString(strconv.FormatInt(x, 10))
	case []any:
		b.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				b.WriteString(", ")
			}
			writePy(b, e)
		}
		b.WriteByte(']')
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		b.WriteByte('{')
		for i, k := range keys {
			if i > 0 {
				b.WriteString(", ")
			}
			pyString(b, k)
			b.WriteString(": ")
			writePy(b, x[k])
		}
		b.WriteByte('}')
	case ordered:
		b.WriteByte('{')
		for i, kv := range x {
			if i > 0 {
				b.WriteString(", ")
			}
			pyString(b, kv.k)
			b.WriteString(": ")
			writePy(b, kv.v)
		}
		b.WriteByte('}')
	case rawJSON:
		writeRaw(b, x)
	default:
		pyString(b, "?")
	}
}

// writeNumber prints a JSON number as Python would after json.loads: an
// integer as is, anything with a fraction or exponent as a float repr.
func writeNumber(b *strings.Builder, n string) {
	if !strings.ContainsAny(n, ".eE") {
		b.WriteString(n)
		return
	}
	f, err := strconv.ParseFloat(n, 64)
	if err != nil {
		b.WriteString(n)
		return
	}
	b.WriteString(pyRepr(f))
}

// rawJSON is JSON text re-encoded in Python's style, keeping key order.
type rawJSON []byte

func writeRaw(b *strings.Builder, raw []byte) {
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	var walk func() error
	walk = func() error {
		t, err := d.Token()
		if err != nil {
			return err
		}
		switch x := t.(type) {
		case json.Delim:
			switch x {
			case '{':
				b.WriteByte('{')
				for i := 0; d.More(); i++ {
					if i > 0 {
						b.WriteString(", ")
					}
					k, err := d.Token()
					if err != nil {
						return err
					}
					pyString(b, k.(string))
					b.WriteString(": ")
					if err := walk(); err != nil {
						return err
					}
				}
				d.Token()
				b.WriteByte('}')
			case '[':
				b.WriteByte('[')
				for i := 0; d.More(); i++ {
					if i > 0 {
						b.WriteString(", ")
					}
					if err := walk(); err != nil {
						return err
					}
				}
				d.Token()
				b.WriteByte(']')
			}
		default:
			writePy(b, x)
		}
		return nil
	}
	if err := walk(); err != nil && err != io.EOF {
		b.WriteString("null")
	}
}

type kv struct {
	k string
	v any
}

// ordered is a JSON object with keys in insertion order.
type ordered []kv

// Dict is JobInfo.to_dict(): the job object of `flux jobs --json`, with
// its keys in the order flux prints them and unset values left out.
func (j *Info) Dict() ordered {
	var o ordered
	add := func(k string, v value) {
		switch {
		case v.k == kStr && v.s == "":
			return
		case (strings.HasPrefix(k, "t_") || k == "runtime" || k == "expiration") && v.k == kFloat && v.f == 0:
			return
		}
		var x any
		switch v.k {
		case kStr:
			x = v.s
		case kInt:
			x = v.i
		case kFloat:
			x = v.f
		case kBool:
			x = v.b
		}
		o = append(o, kv{k, x})
	}
	f := func(name string) value {
		v, _ := j.field(name)
		return v
	}
	for _, k := range []string{"t_depend", "t_priority", "t_sched", "t_run", "t_cleanup", "t_inactive",
		"duration", "expiration", "name", "cwd", "queue", "project", "bank", "ntasks", "ncores", "nnodes",
		"priority", "ranks", "nodelist", "success", "result", "waitstatus"} {
		add(k, f(k))
	}
	if j.ID != 0 {
		o = append(o, kv{"id", int64(j.ID)})
	}
	for _, k := range []string{"t_submit", "t_remaining", "state", "username", "userid", "urgency", "runtime", "status", "returncode"} {
		add(k, f(k))
	}
	deps := []any{}
	if s := j.dependencies(); s != "" {
		for _, d := range strings.Split(s, ",") {
			deps = append(deps, d)
		}
	}
	o = append(o, kv{"dependencies", deps})
	o = append(o, kv{"jobid", "f" + strings.TrimPrefix(j.JobID, "f")})
	if j.env.F58Prefix != "" {
		o[len(o)-1].v = j.env.F58Prefix + strings.TrimPrefix(j.JobID, "f")
	}
	if len(j.Annotations) > 0 {
		o = append(o, kv{"annotations", rawJSON(j.Annotations)})
	} else {
		o = append(o, kv{"annotations", ordered{}})
	}
	if e := j.Exception; e != nil && !j.active() {
		o = append(o, kv{"exception", ordered{{"occurred", true}, {"severity", int64(e.Severity)}, {"type", e.Type}, {"note", e.Note}}})
	} else {
		o = append(o, kv{"exception", ordered{{"occurred", false}}})
	}
	if j.URI != "" {
		o = append(o, kv{"uri", j.URI})
	}
	return o
}

// JSON is `flux jobs --json` of the jobs: {"jobs": [...]}.
func JSON(jobs []*Info) string {
	list := make([]any, len(jobs))
	for i, j := range jobs {
		list[i] = j.Dict()
	}
	return pyJSON(ordered{{"jobs", list}})
}

// JSONOne is `flux jobs --json JOBID`: the one job's object.
func JSONOne(j *Info) string { return pyJSON(j.Dict()) }
