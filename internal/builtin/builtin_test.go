package builtin

import (
	"os"
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

// The sample config shipped with each component, put together, is a valid
// pipeline: documentation that does not validate is a bug.
func TestSamplesValidate(t *testing.T) {
	merged := map[string]map[string]any{}
	for name, sample := range map[string]string{"flux": flux.Sample, "kafka source": kafkasource.Sample,
		"avro": avro.Sample, "anonymize": anonymize.Sample, "filter": filter.Sample, "where": where.Sample, "route": route.Sample,
		"kafka": kafka.Sample, "file": file.Sample, "stdout": stdout.Sample, "jobdb": jobdb.Sample, "plugin": host.Sample, "elasticsearch": elasticsearch.Sample} {
		var doc map[string]map[string]any
		if err := yaml.Unmarshal([]byte(sample), &doc); err != nil {
			t.Fatalf("%s sample: %v", name, err)
		}
		for section, nodes := range doc {
			if merged[section] == nil {
				merged[section] = map[string]any{}
			}
			for k, v := range nodes {
				merged[section][k] = v
			}
		}
	}
	text, _ := yaml.Marshal(merged)
	cfg, err := core.LoadConfig("samples.yaml", text, core.LoadOptions{Environ: []string{}, ReadFile: func(string) ([]byte, error) { return []byte("secret"), nil }})
	if err == nil {
		_, err = core.Build(cfg, Registry())
	}
	if err != nil {
		t.Fatalf("samples do not validate:\n%v\n%s", err, text)
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
