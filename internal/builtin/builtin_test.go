package builtin

import (
	"os"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/plugins/host"
	"github.com/fluxstream/fluxstream/sinks/elasticsearch"
	"github.com/fluxstream/fluxstream/sinks/file"
	"github.com/fluxstream/fluxstream/sinks/jobdb"
	"github.com/fluxstream/fluxstream/sinks/kafka"
	"github.com/fluxstream/fluxstream/sinks/stdout"
	"github.com/fluxstream/fluxstream/sources/flux"
	kafkasource "github.com/fluxstream/fluxstream/sources/kafka"
	"github.com/fluxstream/fluxstream/transforms/anonymize"
	"github.com/fluxstream/fluxstream/transforms/avro"
	"github.com/fluxstream/fluxstream/transforms/filter"
	"github.com/fluxstream/fluxstream/transforms/route"
	"github.com/fluxstream/fluxstream/transforms/where"
)

// The sample config shipped with each component is a valid pipeline
// once its neighbours are there: the flux source's sample, the anonymize
// sample (that where and route read), and a stdout sink reading what no
// node of the sample reads. Documentation that does not validate is a bug.
func TestSamplesValidate(t *testing.T) {
	samples := map[string]string{"flux": flux.Sample, "kafka source": kafkasource.Sample,
		"avro": avro.Sample, "anonymize": anonymize.Sample, "filter": filter.Sample, "where": where.Sample, "route": route.Sample,
		"kafka": kafka.Sample, "file": file.Sample, "stdout": stdout.Sample, "jobdb": jobdb.Sample, "plugin": host.Sample,
		"elasticsearch": elasticsearch.Sample}
	for name, sample := range samples {
		t.Run(name, func(t *testing.T) {
			merged := map[string]map[string]any{}
			read := map[string]bool{}
			var ends []string
			for _, part := range []string{flux.Sample, anonymize.Sample, avro.Sample, sample} {
				var doc map[string]map[string]map[string]any
				if err := yaml.Unmarshal([]byte(part), &doc); err != nil {
					t.Fatalf("%s sample: %v", name, err)
				}
				for section, nodes := range doc {
					if merged[section] == nil {
						merged[section] = map[string]any{}
					}
					for k, v := range nodes {
						merged[section][k] = v
						if section != "sinks" && part == sample {
							ends = append(ends, k)
						}
						if in, ok := v["inputs"].([]any); ok {
							for _, i := range in {
								n, _, _ := strings.Cut(i.(string), ".")
								read[n] = true
							}
						}
					}
				}
			}
			var unread []string
			for _, n := range ends {
				if !read[n] && !slices.Contains(unread, n) {
					unread = append(unread, n)
				}
			}
			for _, n := range []string{"flux", "anon", "avro"} {
				if !read[n] && !slices.Contains(unread, n) {
					unread = append(unread, n)
				}
			}
			if merged["sinks"] == nil {
				merged["sinks"] = map[string]any{}
			}
			merged["sinks"]["docs_out"] = map[string]any{"type": "stdout", "inputs": unread}
			text, _ := yaml.Marshal(merged)
			cfg, err := core.LoadConfig("samples.yaml", text, core.LoadOptions{Environ: []string{}, ReadFile: func(string) ([]byte, error) { return []byte("secret"), nil }})
			if err == nil {
				_, err = core.Build(cfg, Registry())
			}
			if err != nil {
				t.Fatalf("the %s sample does not validate:\n%v\n%s", name, err, text)
			}
		})
	}
}

func TestExampleConfigValidates(t *testing.T) {
	data, err := os.ReadFile("../../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := core.LoadConfig("config.example.yaml", data, core.LoadOptions{Environ: []string{},
		ReadFile: func(string) ([]byte, error) { return []byte("secret"), nil }})
	if err == nil {
		_, err = core.Build(cfg, Registry())
	}
	if err != nil {
		t.Fatalf("config.example.yaml:\n%v", err)
	}
	if !strings.Contains(string(data), "type: flux") {
		t.Fatal("the example streams no Flux instance")
	}
}

func TestEveryModuleRegistered(t *testing.T) {
	r := Registry()
	for kind, want := range map[string]string{
		core.KindSource:    "flux kafka replay",
		core.KindTransform: "anonymize avro filter route where",
		core.KindSink:      "elasticsearch file jobdb kafka plugin stdout",
	} {
		var got []string
		for _, m := range r.Modules(kind) {
			got = append(got, m.Type)
		}
		if strings.Join(got, " ") != want {
			t.Errorf("%s types %v, want %s", kind, got, want)
		}
	}
}
