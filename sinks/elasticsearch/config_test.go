package elasticsearch

import (
	"strings"
	"testing"

	"github.com/fluxstream/fluxstream/core"
)

func TestConfigErrors(t *testing.T) {
	for _, c := range []struct{ yaml, want string }{
		{"profile: splunk\n", `sinks.es.profile: unknown profile "splunk" (native, ecs, slurm)`},
		{"username: u\npassword: p\napi_key: k\n", `sinks.es.api_key: cannot be combined with password`},
		{"events: {index: flux-events}\n", `sinks.es.events.index: "flux-events" has no date pattern`},
		{"events: {index: flux-events-%Y, data_stream: true}\n", `sinks.es.events.index: "flux-events-%Y": a data stream is one name`},
		{"jobs: {index: flux-jobs-%Y}\n", `sinks.es.jobs.index: "flux-jobs-%Y": the jobs index holds one document per job`},
		{"flavor: solr\n", `sinks.es.flavor: unknown flavor "solr"`},
		{"addresses: [\"https://u:secret@es1:9200\"]\n", `sinks.es.addresses: "https://u:xxxxx@es1:9200": credentials do not belong in an address`},
		{"templates: {priority: 100}\n", `sinks.es.templates.priority: 100 would let the built-in logs-*-* templates`},
		{"flavor: opensearch\ntemplates: {ilm_policy: p}\n", `sinks.es.templates.ilm_policy: OpenSearch has no ILM`},
		{"events: {index: Flux-%Y}\n", `sinks.es.events.index: "Flux-%Y": index names are lowercase`},
		{"username: u\n", `sinks.es.password_file: username "u" needs a password`},
		{"tls: {cert_file: c.pem}\n", `sinks.es.tls: cert_file and key_file go together`},
		{"flavor: opensearch\nobject_fields: flattened\n", `sinks.es.object_fields: flattened is Elasticsearch's`},
		{"events: {index: e-%Q}\n", `unknown conversion %Q`},
		{"bogus: 1\n", `sinks.es.bogus: unknown key`},
	} {
		nc, err := core.ParseNodeConfig(core.KindSink, "es", []byte(c.yaml))
		if err == nil {
			_, err = New(nc)
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want %q", c.yaml, err, c.want)
		}
	}
	nc, _ := core.ParseNodeConfig(core.KindSink, "es", []byte("addresses: [https://es1:9200]\nusername: u\npassword_file: /etc/pw\n"))
	if _, err := New(nc); err != nil {
		t.Errorf("a good config: %v", err)
	}
}
