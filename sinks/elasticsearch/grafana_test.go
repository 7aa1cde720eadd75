package elasticsearch

// The Grafana dashboard of contrib/grafana, checked against this sink:
// every field a panel uses is in the mapping the sink installs (native
// profile), and every panel's query, run as Grafana's Elasticsearch
// datasource would run it, returns data from the real node loaded with the
// bulk fixture (plus the scenario journal, which has what 2000 `true` jobs
// lack: failures, exceptions, a bank, jobs still pending and running).

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/internal/estest"
)

const grafanaDir = "../../contrib/grafana"

type gDatasource struct {
	Type string `json:"type"`
	UID  string `json:"uid"`
}

type gAgg struct {
	ID       string         `json:"id"`
	Type     string         `json:"type"`
	Field    string         `json:"field"`
	Settings map[string]any `json:"settings"`
}

type gTarget struct {
	RefID      string      `json:"refId"`
	Datasource gDatasource `json:"datasource"`
	Query      string      `json:"query"`
	TimeField  string      `json:"timeField"`
	Metrics    []gAgg      `json:"metrics"`
	BucketAggs []gAgg      `json:"bucketAggs"`
}

type gPanel struct {
	ID         int         `json:"id"`
	Title      string      `json:"title"`
	Type       string      `json:"type"`
	Datasource gDatasource `json:"datasource"`
	Targets    []gTarget   `json:"targets"`
	Panels     []gPanel    `json:"panels"` // rows
}

// gdsIndex is what a provisioned datasource queries.
type gdsIndex struct{ index, timeField string }

// grafanaDashboard reads the dashboard's panels (rows flattened).
func grafanaDashboard(t testing.TB) []gPanel {
	t.Helper()
	b, err := os.ReadFile(grafanaDir + "/dashboards/fluxstream-jobs.json")
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		UID    string   `json:"uid"`
		Panels []gPanel `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("dashboard: %v", err)
	}
	var out []gPanel
	var walk func([]gPanel)
	walk = func(ps []gPanel) {
		for _, p := range ps {
			if p.Type == "row" {
				walk(p.Panels)
				continue
			}
			out = append(out, p)
		}
	}
	walk(d.Panels)
	if len(out) == 0 {
		t.Fatal("dashboard has no panels")
	}
	return out
}

// grafanaDatasources reads the provisioning file: uid -> index and time field.
func grafanaDatasources(t testing.TB) map[string]gdsIndex {
	t.Helper()
	b, err := os.ReadFile(grafanaDir + "/provisioning/datasources/fluxstream.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		APIVersion  int `yaml:"apiVersion"`
		Datasources []struct {
			Name     string `yaml:"name"`
			UID      string `yaml:"uid"`
			Type     string `yaml:"type"`
			JSONData struct {
				Index     string `yaml:"index"`
				TimeField string `yaml:"timeField"`
			} `yaml:"jsonData"`
		} `yaml:"datasources"`
	}
	if err := yaml.Unmarshal(b, &f); err != nil {
		t.Fatalf("datasources: %v", err)
	}
	out := map[string]gdsIndex{}
	for _, ds := range f.Datasources {
		if ds.Type != "elasticsearch" || ds.UID == "" || ds.JSONData.Index == "" || ds.JSONData.TimeField == "" {
			t.Errorf("datasource %q: want type elasticsearch, a uid, jsonData.index and timeField: %+v", ds.Name, ds)
		}
		out[ds.UID] = gdsIndex{ds.JSONData.Index, ds.JSONData.TimeField}
	}
	for _, uid := range []string{"fluxstream-jobs", "fluxstream-events"} {
		if _, ok := out[uid]; !ok {
			t.Errorf("datasource uid %s not provisioned", uid)
		}
	}
	return out
}

// luceneField finds the field names of a Lucene query (field:value).
var luceneField = regexp.MustCompile(`(?:^|[\s(!+\-])([A-Za-z_@][A-Za-z0-9_.@]*):`)

// gField is one use of a field by a target: what for, and the mapping
// types that use accepts.
type gField struct {
	name, use string
	types     []string // nil: any indexed type
}

var (
	aggregatable = []string{"keyword", "long", "integer", "double", "boolean", "date"}
	numeric      = []string{"long", "integer", "double"}
)

func targetFields(tg gTarget) []gField {
	fs := []gField{{tg.TimeField, "timeField", []string{"date"}}}
	for _, m := range luceneField.FindAllStringSubmatch(tg.Query, -1) {
		fs = append(fs, gField{m[1], "query", nil})
	}
	for _, a := range tg.BucketAggs {
		switch a.Type {
		case "date_histogram":
			fs = append(fs, gField{a.Field, a.Type, []string{"date"}})
		default:
			fs = append(fs, gField{a.Field, a.Type, aggregatable})
		}
	}
	for _, a := range tg.Metrics {
		switch a.Type {
		case "count":
		case "cardinality":
			fs = append(fs, gField{a.Field, a.Type, aggregatable})
		default:
			fs = append(fs, gField{a.Field, a.Type, numeric})
		}
	}
	return fs
}

// mappedType is the type of a dotted field in a mapping's properties, ""
// when it is absent or not indexed.
func mappedType(mapping map[string]any, name string) string {
	cur := mapping
	parts := strings.Split(name, ".")
	for i, p := range parts {
		props, _ := cur["properties"].(map[string]any)
		f, ok := props[p].(map[string]any)
		if !ok {
			return ""
		}
		if e, ok := f["enabled"].(bool); ok && !e {
			return ""
		}
		if ix, ok := f["index"].(bool); ok && !ix {
			return ""
		}
		if i == len(parts)-1 {
			if ty, ok := f["type"].(string); ok {
				return ty
			}
			return "object"
		}
		cur = f
	}
	return ""
}

// checkPanelFields checks every field of every target against mapping.
func checkPanelFields(t *testing.T, what string, panels []gPanel, mapping map[string]any) {
	t.Helper()
	n := 0
	for _, p := range panels {
		for _, tg := range p.Targets {
			for _, f := range targetFields(tg) {
				n++
				ty := mappedType(mapping, f.name)
				switch {
				case ty == "" || ty == "object":
					t.Errorf("%s: panel %q: %s field %q is not an indexed field of the mapping", what, p.Title, f.use, f.name)
				case f.types != nil && !contains(f.types, ty):
					t.Errorf("%s: panel %q: %s field %q is %s, want one of %v", what, p.Title, f.use, f.name, ty, f.types)
				}
			}
		}
	}
	if n == 0 {
		t.Errorf("%s: no fields found", what)
	}
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}

// roundTrip turns a Go mapping into its JSON form (what the node stores).
func roundTrip(t testing.TB, v any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestGrafanaDashboardFields: the dashboard's datasources are the
// provisioned ones, and every field its panels use is in the native
// profile's mappings component template (the PUT body Prepare sends).
// No node needed.
func TestGrafanaDashboardFields(t *testing.T) {
	panels := grafanaDashboard(t)
	dss := grafanaDatasources(t)
	for _, p := range panels {
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no targets", p.Title)
		}
		for _, tg := range p.Targets {
			if _, ok := dss[tg.Datasource.UID]; !ok || tg.Datasource.Type != "elasticsearch" {
				t.Errorf("panel %q: target datasource %+v is not a provisioned one", p.Title, tg.Datasource)
			}
			if tg.Datasource != p.Datasource {
				t.Errorf("panel %q: target datasource %+v, panel's %+v", p.Title, tg.Datasource, p.Datasource)
			}
			if tg.TimeField != dss[tg.Datasource.UID].timeField {
				t.Errorf("panel %q: timeField %q, datasource's %q", p.Title, tg.TimeField, dss[tg.Datasource.UID].timeField)
			}
			if len(tg.Metrics) == 0 {
				t.Errorf("panel %q: no metrics", p.Title)
			}
		}
	}
	for _, objects := range []string{"flattened", "flat_object", "disabled"} {
		c := &Config{Profile: "native", ObjectFields: objects}
		c.Templates.Name = "fluxstream"
		var mapping map[string]any
		for _, tp := range c.templates() {
			if strings.HasSuffix(tp.path, "/_component_template/fluxstream-native-mappings") {
				mapping = roundTrip(t, tp.body)["template"].(map[string]any)["mappings"].(map[string]any)
			}
		}
		if mapping == nil {
			t.Fatal("no native mappings component template")
		}
		checkPanelFields(t, "template fluxstream-native-mappings (object_fields: "+objects+")", panels, mapping)
	}
}

// searchBody is the _search request Grafana's Elasticsearch datasource
// sends for a metrics target: the time range and the Lucene query as
// filters, the bucket aggregations nested in order (the first outermost),
// the metrics inside the innermost.
func searchBody(tg gTarget, from, to time.Time, interval string) (map[string]any, error) {
	metrics := map[string]any{}
	for _, mt := range tg.Metrics {
		switch mt.Type {
		case "count":
			continue
		case "sum", "avg", "min", "max", "cardinality":
			metrics[mt.ID] = map[string]any{mt.Type: map[string]any{"field": mt.Field}}
		case "percentiles":
			var percents []float64
			ps, _ := mt.Settings["percents"].([]any)
			for _, p := range ps {
				f, err := strconv.ParseFloat(fmt.Sprint(p), 64)
				if err != nil {
					return nil, fmt.Errorf("percentile %v: %v", p, err)
				}
				percents = append(percents, f)
			}
			if len(percents) == 0 {
				return nil, fmt.Errorf("percentiles without percents")
			}
			metrics[mt.ID] = map[string]any{"percentiles": map[string]any{"field": mt.Field, "percents": percents}}
		default:
			return nil, fmt.Errorf("metric type %q not handled by this test", mt.Type)
		}
	}
	aggs := metrics
	for i := len(tg.BucketAggs) - 1; i >= 0; i-- {
		b := tg.BucketAggs[i]
		var agg map[string]any
		switch b.Type {
		case "date_histogram":
			iv := interval
			if s, _ := b.Settings["interval"].(string); s != "" && s != "auto" {
				iv = s
			}
			agg = map[string]any{"date_histogram": map[string]any{
				"field": b.Field, "fixed_interval": iv, "min_doc_count": 0, "format": "epoch_millis",
				"extended_bounds": map[string]any{"min": from.UnixMilli(), "max": to.UnixMilli()},
			}}
		case "terms":
			size := 10
			if s, _ := b.Settings["size"].(string); s != "" && s != "0" {
				n, err := strconv.Atoi(s)
				if err != nil {
					return nil, fmt.Errorf("terms size %q: %v", s, err)
				}
				size = n
			}
			orderBy, _ := b.Settings["orderBy"].(string)
			order, _ := b.Settings["order"].(string)
			if order == "" {
				order = "desc"
			}
			switch orderBy {
			case "", "_count":
				orderBy = "_count"
			case "_term":
				orderBy = "_key"
			default:
				if _, ok := metrics[orderBy]; !ok {
					return nil, fmt.Errorf("terms %s ordered by metric %q, which is not a sortable metric of the target", b.Field, orderBy)
				}
			}
			minDoc := 1
			if s, _ := b.Settings["min_doc_count"].(string); s != "" {
				minDoc, _ = strconv.Atoi(s)
			}
			agg = map[string]any{"terms": map[string]any{
				"field": b.Field, "size": size, "order": map[string]any{orderBy: order}, "min_doc_count": minDoc,
			}}
		default:
			return nil, fmt.Errorf("bucket aggregation %q not handled by this test", b.Type)
		}
		if len(aggs) > 0 {
			agg["aggs"] = aggs
		}
		aggs = map[string]any{b.ID: agg}
	}
	q := tg.Query
	if strings.TrimSpace(q) == "" {
		q = "*"
	}
	body := map[string]any{
		"size": 0,
		"query": map[string]any{"bool": map[string]any{"filter": []any{
			map[string]any{"range": map[string]any{tg.TimeField: map[string]any{
				"gte": from.UnixMilli(), "lte": to.UnixMilli(), "format": "epoch_millis"}}},
			map[string]any{"query_string": map[string]any{"analyze_wildcard": true, "query": q}},
		}}},
	}
	if len(tg.BucketAggs) == 0 {
		body["size"] = 500 // a raw-data target
	}
	if len(aggs) > 0 {
		body["aggs"] = aggs
	}
	return body, nil
}

// hasData walks the answer's aggregations down the bucket aggregations and
// tells whether some innermost bucket has documents and, for each metric, a
// value (a positive one for sum and cardinality); it returns how many such
// buckets there are.
func hasData(tg gTarget, aggs map[string]any, level int) int {
	if level == len(tg.BucketAggs) {
		for _, mt := range tg.Metrics {
			switch mt.Type {
			case "count":
			case "percentiles":
				a, _ := aggs[mt.ID].(map[string]any)
				vals, _ := a["values"].(map[string]any)
				if len(vals) == 0 {
					return 0
				}
				for _, v := range vals {
					if _, ok := v.(float64); !ok {
						return 0
					}
				}
			default:
				a, _ := aggs[mt.ID].(map[string]any)
				v, ok := a["value"].(float64)
				if !ok || math.IsNaN(v) || (mt.Type != "min" && mt.Type != "max" && mt.Type != "avg" && v <= 0) {
					return 0
				}
			}
		}
		return 1
	}
	b := tg.BucketAggs[level]
	a, _ := aggs[b.ID].(map[string]any)
	buckets, _ := a["buckets"].([]any)
	n := 0
	for _, x := range buckets {
		bk, _ := x.(map[string]any)
		if dc, _ := bk["doc_count"].(float64); dc > 0 {
			n += hasData(tg, bk, level+1)
		}
	}
	return n
}

// withUser gives recs the user name a source's user_lookup would give
// uid 6001 (the fixtures' fluxuser; the test helpers replay with
// user_lookup: none).
func withUser(recs []*core.Record) []*core.Record {
	out := make([]*core.Record, 0, len(recs))
	for _, r := range recs {
		if r.Job != nil && r.Job.UserID == 6001 && r.Job.Username == "" {
			r = r.Clone()
			r.Job.Username = "fluxuser"
		}
		out = append(out, r)
	}
	return out
}

// liveCut is the first record from the middle of the bulk fixture on
// where, had the stream stopped there, some job is running and some is
// pending.
func liveCut(t testing.TB, recs []*core.Record) int {
	state := map[string]string{}
	for i, r := range recs {
		if r.Job != nil {
			state[jobKeyOf(r)] = r.Job.State
		}
		if i < len(recs)/2 {
			continue
		}
		var run, pending bool
		for _, st := range state {
			run = run || st == "RUN"
			pending = pending || st == "DEPEND" || st == "PRIORITY" || st == "SCHED"
		}
		if run && pending {
			return i + 1
		}
	}
	t.Fatal("bulk fixture: never a running and a pending job at once after its middle")
	return 0
}

// nowQuery tells a panel query about jobs not finished yet (their latest
// state): it has data while jobs run or wait, none once all are done.
var nowQuery = regexp.MustCompile(`job\.state:\(?\s*(DEPEND|PRIORITY|SCHED|RUN|CLEANUP)\b`)

// TestGrafanaPanelQueries loads the real node with the scenario journal
// (failures, exceptions, a bank) and then the bulk fixture, and runs every
// panel target's query as Grafana would: first mid-stream (the bulk
// fixture cut where jobs are both running and pending), when every panel
// must return data; then with the whole fixture, when every panel must
// still return data except the "now" ones (jobs not finished), which must
// return none. It also checks every field a panel uses against the
// mappings of the indices the sink's templates created.
func TestGrafanaPanelQueries(t *testing.T) {
	panels := grafanaDashboard(t)
	dss := grafanaDatasources(t)
	node := estest.Start(t)
	prefix := estest.Prefix()
	node.Cleanup(t, prefix)
	s := newSink(t, node.URL, sinkYAML(prefix, "native", "in_flight: 4\n"))
	bulk := withUser(bulk2000(t))
	cut := liveCut(t, bulk)
	// The datasources' indices, renamed to the test's.
	index := map[string]string{}
	for uid, ds := range dss {
		switch ds.index {
		case "flux-jobs":
			index[uid] = prefix + "jobs"
		case "flux-events-*":
			index[uid] = prefix + "events-*"
		default:
			t.Fatalf("datasource %s: index %q is not the sink's default", uid, ds.index)
		}
	}
	var loaded []*core.Record
	load := func(recs []*core.Record) {
		t.Helper()
		start := time.Now()
		if perm, _ := deliver(t, s, recs, 1000); len(perm) > 0 {
			t.Fatalf("%d records refused, e.g. %s", len(perm), first(perm))
		}
		for _, ix := range index {
			node.Refresh(t, ix)
		}
		loaded = append(loaded, recs...)
		t.Logf("indexed %d records in %v", len(recs), time.Since(start).Round(time.Millisecond))
	}

	load(append(withUser(scenario(t)), bulk[:cut]...))
	live := runPanels(t, node, panels, index, loaded)
	load(bulk[cut:])
	done := runPanels(t, node, panels, index, loaded)
	nows := 0
	for _, p := range panels {
		for _, tg := range p.Targets {
			what := fmt.Sprintf("panel %d %q target %s", p.ID, p.Title, tg.RefID)
			now := nowQuery.MatchString(tg.Query)
			if now {
				nows++
			}
			k := what
			t.Logf("%s: mid-stream %d, whole fixture %d", what, live[k], done[k])
			switch {
			case live[k] <= 0:
				t.Errorf("%s: no data mid-stream", what)
			case now && done[k] != 0:
				t.Errorf("%s: %d with every job finished, want none", what, done[k])
			case !now && done[k] <= 0:
				t.Errorf("%s: no data with the whole fixture", what)
			}
		}
	}
	if nows == 0 {
		t.Error("no panel about running or pending jobs")
	}

	// Mapping of the indices the templates created.
	for uid, ix := range index {
		var got map[string]struct {
			Mappings map[string]any `json:"mappings"`
		}
		if err := node.Do(context.Background(), "GET", "/"+ix+"/_mapping", nil, &got); err != nil {
			t.Fatal(err)
		}
		if len(got) == 0 {
			t.Fatalf("%s: no index", ix)
		}
		var uidPanels []gPanel
		for _, p := range panels {
			if p.Datasource.UID == uid {
				uidPanels = append(uidPanels, p)
			}
		}
		names := make([]string, 0, len(got))
		for name := range got {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			checkPanelFields(t, "index "+name, uidPanels, got[name].Mappings)
		}
	}
}

// runPanels runs every target over the time span of recs and returns, by
// target, the number of innermost buckets with data (the hits when the
// target has no bucket aggregation), 0 when there are no hits, -1 when the
// request failed (reported).
func runPanels(t *testing.T, node *estest.Node, panels []gPanel, index map[string]string, recs []*core.Record) map[string]int {
	t.Helper()
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, r := range recs {
		if r.Event != nil {
			lo, hi = math.Min(lo, r.Event.Timestamp), math.Max(hi, r.Event.Timestamp)
		}
	}
	from := time.UnixMilli(int64(lo*1000) - 60_000)
	to := time.UnixMilli(int64(hi*1000) + 60_000)
	// About 100 buckets over the range, as Grafana's auto interval.
	interval := fmt.Sprintf("%ds", max(1, int(to.Sub(from).Seconds()/100)))
	out := map[string]int{}
	for _, p := range panels {
		for _, tg := range p.Targets {
			what := fmt.Sprintf("panel %d %q target %s", p.ID, p.Title, tg.RefID)
			out[what] = -1
			body, err := searchBody(tg, from, to, interval)
			if err != nil {
				t.Errorf("%s: %v", what, err)
				continue
			}
			var res struct {
				Hits struct {
					Total struct {
						Value int `json:"value"`
					} `json:"total"`
				} `json:"hits"`
				Aggregations map[string]any `json:"aggregations"`
			}
			path := "/" + index[tg.Datasource.UID] + "/_search?ignore_unavailable=true"
			if err := node.Do(context.Background(), "POST", path, body, &res); err != nil {
				js, _ := json.Marshal(body)
				t.Errorf("%s: %v\nrequest: %s", what, err, js)
				continue
			}
			switch {
			case res.Hits.Total.Value == 0:
				out[what] = 0
			case len(tg.BucketAggs) == 0:
				out[what] = res.Hits.Total.Value
			default:
				out[what] = hasData(tg, res.Aggregations, 0)
				if out[what] == 0 {
					js, _ := json.Marshal(res.Aggregations)
					t.Logf("%s: %d hits but no bucket with data: %.600s", what, res.Hits.Total.Value, js)
				}
			}
		}
	}
	return out
}
