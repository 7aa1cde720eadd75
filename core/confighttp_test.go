package core_test

import (
	"strings"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core"
)

const httpBase = "sources:\n  a: {type: gen}\nsinks:\n  s: {type: mem, inputs: [a]}\n"

func TestHTTPConfig(t *testing.T) {
	g, err := build(t, httpBase)
	if err != nil {
		t.Fatal(err)
	}
	if g.Config.HTTP != nil {
		t.Errorf("http without a section = %+v, want off", g.Config.HTTP)
	}
	g, err = build(t, "http:\n  listen: 127.0.0.1:9180\n"+httpBase)
	if err != nil {
		t.Fatal(err)
	}
	if h := g.Config.HTTP; h == nil || h.Listen != "127.0.0.1:9180" || h.UnhealthyAfter != core.DefaultUnhealthyAfter {
		t.Errorf("http = %+v", h)
	}
	g, err = build(t, "http: {listen: \":0\", unhealthy_after: 90s}\n"+httpBase)
	if err != nil {
		t.Fatal(err)
	}
	if h := g.Config.HTTP; h.Listen != ":0" || h.UnhealthyAfter != 90*time.Second {
		t.Errorf("http = %+v", h)
	}
	g, err = build(t, httpBase, "FLUXSTREAM_HTTP__LISTEN=127.0.0.1:9999")
	if err != nil {
		t.Fatal(err)
	}
	if h := g.Config.HTTP; h == nil || h.Listen != "127.0.0.1:9999" {
		t.Errorf("http from the environment = %+v", h)
	}
}

func TestHTTPConfigErrors(t *testing.T) {
	tests := []struct{ yaml, want string }{
		{"http: 9180\n", "test.yaml:1: http: want a mapping with listen (and unhealthy_after)"},
		{"http:\n  unhealthy_after: 1m\n", "test.yaml:1: http: listen is missing (host:port, e.g. 127.0.0.1:9180)"},
		{"http:\n  listen: localhost\n", `test.yaml:2: http.listen: want host:port (e.g. 127.0.0.1:9180), got "localhost"`},
		{"http:\n  listen: localhost:http\n", `test.yaml:2: http.listen: port "http" is not a number from 0 to 65535`},
		{"http:\n  listen: localhost:70000\n", `test.yaml:2: http.listen: port "70000" is not a number from 0 to 65535`},
		{"http:\n  listen: :9180\n  unhealthy_after: -1s\n", "test.yaml:3: http.unhealthy_after: want a positive duration like 5m, got -1s"},
		{"http:\n  listen: :9180\n  unhealthy_after: soon\n", "test.yaml:3: http.unhealthy_after"},
		{"http:\n  listen: :9180\n  liste: x\n", `test.yaml:3: http.liste: unknown key`},
		{"htp:\n  listen: :9180\n", `test.yaml:1: htp: unknown top-level key (did you mean "http"?)`},
	}
	for _, tc := range tests {
		_, err := build(t, tc.yaml+httpBase)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want it to hold %q", tc.yaml, err, tc.want)
		}
	}
}
