package schemas_test

import (
	"bufio"
	"encoding/json"
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/fluxstream/fluxstream/core"
)

// docTables reads the "in JSON" column of record.md's job tables: field
// -> "always" or "when known", per section (Job, Requested, Allocated).
func docTables(t *testing.T) map[string]map[string]string {
	f, err := os.Open("record.md")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]map[string]string{}
	section := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "## Job":
			section = "Job"
		case strings.HasPrefix(line, "### "):
			section = strings.TrimPrefix(line, "### ")
		case strings.HasPrefix(line, "## "):
			section = ""
		case section != "" && strings.HasPrefix(line, "| `"):
			cells := strings.Split(line, "|")
			if len(cells) < 6 {
				t.Fatalf("record.md: row without an \"in JSON\" column: %s", line)
			}
			field := strings.Trim(strings.TrimSpace(cells[1]), "`")
			if out[section] == nil {
				out[section] = map[string]string{}
			}
			out[section][field] = strings.TrimSpace(cells[4])
		}
	}
	return out
}

func keys(t *testing.T, js []byte, path ...string) map[string]bool {
	var m map[string]any
	if err := json.Unmarshal(js, &m); err != nil {
		t.Fatal(err)
	}
	for _, p := range path {
		m = m[p].(map[string]any)
	}
	out := map[string]bool{}
	for k := range m {
		out[k] = true
	}
	return out
}

// Every "always" of record.md is in the JSON of an empty job, every "when
// known" is not, and every key the encoder writes is in the tables.
func TestRecordDocMatchesEncoder(t *testing.T) {
	doc := docTables(t)
	empty := &core.Record{Kind: core.KindEvent, ID: "x", Job: &core.Job{Requested: &core.Requested{}, Allocated: &core.Allocated{}}}
	emptyJS, _ := empty.MarshalJSON()
	var full core.Record
	n := 0
	fillAll(reflect.ValueOf(&full).Elem(), &n)
	fullJS, _ := full.MarshalJSON()
	for section, path := range map[string][]string{"Job": {"job"}, "Requested": {"job", "requested"}, "Allocated": {"job", "allocated"}} {
		rows := doc[section]
		if len(rows) == 0 {
			t.Fatalf("record.md has no %s table", section)
		}
		have, all := keys(t, emptyJS, path...), keys(t, fullJS, path...)
		for field, when := range rows {
			switch when {
			case "always":
				if !have[field] {
					t.Errorf("record.md: %s.%s is always present, but an empty job lacks it: %s", section, field, emptyJS)
				}
			case "when known":
				if have[field] && !(section == "Job" && (field == "requested" || field == "allocated")) {
					t.Errorf("record.md: %s.%s is left out until known, but an empty job has it", section, field)
				}
			default:
				t.Errorf("record.md: %s.%s: \"in JSON\" is %q (always or when known)", section, field, when)
			}
		}
		var missing []string
		for k := range all {
			if _, ok := rows[k]; !ok {
				missing = append(missing, k)
			}
		}
		sort.Strings(missing)
		if len(missing) > 0 {
			t.Errorf("record.md's %s table lacks %v", section, missing)
		}
	}
}

// fillAll sets every exported field reachable from v to a non-zero value.
func fillAll(v reflect.Value, n *int) {
	*n++
	switch v.Kind() {
	case reflect.Pointer:
		v.Set(reflect.New(v.Type().Elem()))
		fillAll(v.Elem(), n)
	case reflect.Struct:
		for i := range v.NumField() {
			if f := v.Type().Field(i); f.IsExported() && f.Tag.Get("json") != "-" {
				fillAll(v.Field(i), n)
			}
		}
	case reflect.String:
		v.SetString("s")
	case reflect.Int, reflect.Int64:
		v.SetInt(int64(*n))
	case reflect.Uint32, reflect.Uint64:
		v.SetUint(uint64(*n))
	case reflect.Float64:
		v.SetFloat(float64(*n) + 0.5)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Slice:
		if v.Type() == reflect.TypeOf(json.RawMessage(nil)) {
			v.SetBytes([]byte(`{"a":1}`))
			return
		}
		s := reflect.MakeSlice(v.Type(), 1, 1)
		fillAll(s.Index(0), n)
		v.Set(s)
	}
}
