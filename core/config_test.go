package core_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fluxstream/fluxstream/core"
)

func build(t *testing.T, yaml string, env ...string) (*core.Graph, error) {
	t.Helper()
	reg, _ := testRegistry()
	cfg, err := core.LoadConfig("test.yaml", []byte(yaml), core.LoadOptions{Environ: env,
		ReadFile: func(p string) ([]byte, error) {
			if p == "/run/secrets/token" {
				return []byte("s3cret\n"), nil
			}
			return nil, os.ErrNotExist
		}})
	if cfg == nil {
		return nil, err
	}
	return core.Build(cfg, reg)
}

func TestConfigErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		env  []string
		want []string // every line of the error, in order
	}{
		{
			name: "malformed yaml",
			yaml: "sources:\n  a:\n    type: gen\n    inputs: [a\nsinks: {}\n",
			want: []string{"test.yaml:4: invalid YAML: did not find expected ',' or ']' (in the collection that starts on this line)"},
		},
		{
			name: "malformed yaml, block list",
			yaml: "sources:\n  a: {type: gen}\nsinks:\n  - x\n  y: 2\n",
			want: []string{"test.yaml:4: invalid YAML: did not find expected '-' indicator (in the collection that starts on this line)"},
		},
		{
			name: "malformed yaml, scanner error keeps its line",
			yaml: "sources:\n  a: b: c\n",
			want: []string{"test.yaml:2: invalid YAML: mapping values are not allowed in this context"},
		},
		{
			name: "not a mapping",
			yaml: "- a\n- b\n",
			want: []string{"test.yaml:1: the config must be a YAML mapping (sources:, transforms:, sinks:)"},
		},
		{
			name: "unknown top-level key",
			yaml: "source:\n  a: {type: gen}\nsinks:\n  s: {type: mem, inputs: [a]}\n",
			want: []string{
				"test.yaml: no sources: add one under sources:",
				`test.yaml:1: source: unknown top-level key (did you mean "sources"?)`,
				`test.yaml:4: sinks.s.inputs: unknown input "a"`,
			},
		},
		{
			name: "unknown type",
			yaml: "sources:\n  a:\n    type: genn\nsinks:\n  s:\n    type: mem\n    inputs: [a]\n",
			want: []string{`test.yaml:3: sources.a.type: unknown source type "genn" (did you mean "gen"? known: gen)`},
		},
		{
			name: "unknown key with suggestion",
			yaml: "sources:\n  a:\n    type: gen\n    cout: 3\nsinks:\n  s:\n    type: mem\n    inputs: [a]\n",
			want: []string{`test.yaml:4: sources.a.cout: unknown key (did you mean "count"?)`},
		},
		{
			name: "wrong value type",
			yaml: "sources:\n  a:\n    type: gen\n    count: many\nsinks:\n  s:\n    type: mem\n    inputs: [a]\n",
			want: []string{`test.yaml:4: sources.a.count: cannot use "many" as int: strconv.ParseInt: invalid syntax`},
		},
		{
			name: "validate points at the key",
			yaml: "sources:\n  a:\n    type: gen\n    count: -1\nsinks:\n  s:\n    type: mem\n    inputs: [a]\n",
			want: []string{`test.yaml:4: sources.a.count: must not be negative`},
		},
		{
			name: "unknown input",
			yaml: "sources:\n  flux:\n    type: gen\nsinks:\n  s:\n    type: mem\n    inputs: [flx]\n",
			want: []string{
				`test.yaml:2: sources.flux: nothing reads this source: add "flux" to the inputs of a transform or sink`,
				`test.yaml:7: sinks.s.inputs: unknown input "flx" (did you mean "flux"?)`,
			},
		},
		{
			name: "sink without input",
			yaml: "sources:\n  a:\n    type: gen\nsinks:\n  s:\n    type: mem\n    inputs: [a]\n  t:\n    type: mem\n",
			want: []string{`test.yaml:8: sinks.t.inputs: a sink needs inputs: list the sources or transforms it reads`},
		},
		{
			name: "source with nothing downstream",
			yaml: "sources:\n  a:\n    type: gen\n  b:\n    type: gen\nsinks:\n  s:\n    type: mem\n    inputs: [a]\n",
			want: []string{`test.yaml:4: sources.b: nothing reads this source: add "b" to the inputs of a transform or sink`},
		},
		{
			name: "cycle",
			yaml: "sources:\n  a: {type: gen}\ntransforms:\n  t1:\n    type: nth\n    inputs: [a, t2]\n  t2:\n    type: nth\n    inputs: [t1]\nsinks:\n  s:\n    type: mem\n    inputs: [t2]\n",
			want: []string{`test.yaml:6: transforms.t1.inputs: cycle: t1 -> t2 -> t1`},
		},
		{
			name: "input is a sink",
			yaml: "sources:\n  a: {type: gen}\nsinks:\n  s:\n    type: mem\n    inputs: [a]\n  t:\n    type: mem\n    inputs: [s]\n",
			want: []string{`test.yaml:9: sinks.t.inputs: input "s" is a sink; sinks have no output`},
		},
		{
			name: "unknown router output",
			yaml: "sources:\n  a: {type: gen}\ntransforms:\n  r:\n    type: parity\n    inputs: [a]\nsinks:\n  s:\n    type: mem\n    inputs: [r.even, r.eveb]\n",
			want: []string{`test.yaml:10: sinks.s.inputs: input "r.eveb": r has no output "eveb" (outputs: r, r.even, r.odd)`},
		},
		{
			name: "sink runtime settings",
			yaml: "sources:\n  a: {type: gen}\nsinks:\n  s:\n    type: mem\n    inputs: [a]\n    buffer:\n      type: ram\n      when_full: wait\n      max_bytes: lots\n",
			want: []string{
				`test.yaml:8: sinks.s.buffer.type: unknown buffer type "ram" (disk, memory)`,
				`test.yaml:9: sinks.s.buffer.when_full: unknown policy "wait" (block, drop_oldest)`,
				`test.yaml:10: sinks.s.buffer.max_bytes: want a size like 512KiB, 64MB or 1GiB, got "lots"`,
			},
		},
		{
			name: "missing env var",
			yaml: "sources:\n  a:\n    type: gen\n    count: ${COUNT}\nsinks:\n  s: {type: mem, inputs: [a]}\n",
			want: []string{`test.yaml:4: sources.a.count: environment variable COUNT is not set (use ${COUNT:-default} for a default)`},
		},
		{
			name: "bad env override",
			yaml: "sources:\n  a: {type: gen}\nsinks:\n  s: {type: mem, inputs: [a]}\n",
			env:  []string{"FLUXSTREAM_SOURCES__A__COUNT=ten"},
			want: []string{`env FLUXSTREAM_SOURCES__A__COUNT: sources.a.count: cannot use "ten" as int: strconv.ParseInt: invalid syntax`},
		},
		{
			name: "duplicate names across sections",
			yaml: "sources:\n  x: {type: gen}\nsinks:\n  x: {type: mem, inputs: [x]}\n",
			want: []string{
				`test.yaml:2: sources.x: nothing reads this source: add "x" to the inputs of a transform or sink`,
				`test.yaml:4: sinks.x: node name "x" is already used by sources.x; names are unique across sources, transforms and sinks`,
			},
		},
		{
			name: "missing type and a source with inputs",
			yaml: "sources:\n  a:\n    count: 1\n    inputs: [b]\nsinks:\n  s: {type: mem, inputs: [a]}\n",
			want: []string{
				`test.yaml:2: sources.a: missing type`,
				`test.yaml:4: sources.a.inputs: a source has no inputs`,
			},
		},
		{
			name: "every error at once",
			yaml: "data_dirr: /x\nsources:\n  a:\n    type: gen\n    bogus: 1\ntransforms:\n  t:\n    type: nope\n    inputs: [zz]\nsinks:\n  s:\n    type: mem\n",
			want: []string{
				`test.yaml:1: data_dirr: unknown top-level key (did you mean "data_dir"?)`,
				`test.yaml:3: sources.a: nothing reads this source: add "a" to the inputs of a transform or sink`,
				`test.yaml:5: sources.a.bogus: unknown key`,
				`test.yaml:7: transforms.t: nothing reads this transform: add "t" to the inputs of a transform or sink`,
				`test.yaml:8: transforms.t.type: unknown transform type "nope" (known: nth, parity)`,
				`test.yaml:9: transforms.t.inputs: unknown input "zz"`,
				`test.yaml:11: sinks.s.inputs: a sink needs inputs: list the sources or transforms it reads`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := build(t, tt.yaml, tt.env...)
			if err == nil {
				t.Fatal("no error")
			}
			var es core.ConfigErrors
			if !errors.As(err, &es) {
				t.Fatalf("error is %T, not ConfigErrors: %v", err, err)
			}
			got := strings.Split(err.Error(), "\n")
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("errors:\n%s\nwant:\n%s", err, strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestConfigInterpolationAndOverrides(t *testing.T) {
	yaml := `
data_dir: ${DATA:-/var/lib/fluxstream}
cluster: "cost is $$5 for ${CLUSTER}"
sources:
  a:
    type: gen
    count: ${COUNT}
sinks:
  s:
    type: mem
    inputs: [a]
    refuse: ${file:/run/secrets/token}
`
	g, err := build(t, yaml, "CLUSTER=tioga", "COUNT=42", "FLUXSTREAM_SINKS__S__FAIL_FIRST=3", "FLUXSTREAM_CONFIG=/ignored.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if g.Config.DataDir != "/var/lib/fluxstream" || g.Config.Cluster != "cost is $5 for tioga" {
		t.Errorf("data_dir %q cluster %q", g.Config.DataDir, g.Config.Cluster)
	}
	src := g.Node("a").Impl
	if n := src.(interface{ Acked() int }); n == nil {
		t.Fatal("no source")
	}
	sink := g.Node("s")
	if sink.Buffer.Type != "disk" || sink.Buffer.WhenFull != "block" || sink.Buffer.MaxBytes != 1<<30 || sink.Batch.MaxRecords != 0 {
		t.Errorf("sink defaults: %+v %+v", sink.Buffer, sink.Batch)
	}
	// The env override and the secret file reached the sink's own config.
	ms := sink.Impl.(interface{ Got() []string })
	_ = ms
	if got := g.Node("s").Impl.(*memSink); got.FailFirst != 3 || got.Refuse != "s3cret" {
		t.Errorf("sink config = fail_first %d refuse %q", got.FailFirst, got.Refuse)
	}
	if got := g.Node("a").Impl.(*genSource); got.Count != 42 {
		t.Errorf("count = %d", got.Count)
	}
}

func TestEnvListOverride(t *testing.T) {
	g, err := build(t, "sources:\n  a: {type: gen}\n  b: {type: gen}\nsinks:\n  s: {type: mem, inputs: [a]}\n",
		"FLUXSTREAM_SINKS__S__INPUTS=a, b")
	if err != nil {
		t.Fatal(err)
	}
	if in := g.Node("s").Inputs; len(in) != 2 || in[0] != "a" || in[1] != "b" {
		t.Fatalf("inputs = %q", in)
	}
}

func TestLoadConfigFileSecretRelative(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "token"), []byte("abc\n"), 0o600)
	path := filepath.Join(dir, "c.yaml")
	os.WriteFile(path, []byte("sources:\n  a: {type: gen}\nsinks:\n  s:\n    type: mem\n    inputs: [a]\n    refuse: ${file:token}\n"), 0o600)
	cfg, err := core.LoadConfigFile(path, core.LoadOptions{Environ: []string{}})
	if err != nil {
		t.Fatal(err)
	}
	reg, _ := testRegistry()
	g, err := core.Build(cfg, reg)
	if err != nil {
		t.Fatal(err)
	}
	if got := g.Node("s").Impl.(*memSink).Refuse; got != "abc" {
		t.Fatalf("secret = %q", got)
	}
	if _, err := core.LoadConfigFile(filepath.Join(dir, "missing.yaml"), core.LoadOptions{}); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("missing file error = %v", err)
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]int64{"100": 100, "1KiB": 1024, "64MB": 64e6, "1GiB": 1 << 30, "1.5 GiB": 3 << 29, "10kb": 10e3} {
		got, err := core.ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	if _, err := core.ParseByteSize("1 XB"); err == nil {
		t.Error("1 XB parsed")
	}
	if s := core.ByteSize(1 << 30).String(); s != "1GiB" {
		t.Errorf("String = %s", s)
	}
}

// FLUXSTREAM_* variables of tools and tests (FLUXSTREAM_KAFKA_HOME, CI's
// FLUXSTREAM_CROSSCHECKS) are not config overrides; those under a config
// key are.
func TestEnvOverridesOnlyUnderConfigKeys(t *testing.T) {
	cfg, err := core.LoadConfig("t.yaml", []byte("sources:\n  a: {type: x}\n"), core.LoadOptions{Environ: []string{
		"FLUXSTREAM_CROSSCHECKS=required", "FLUXSTREAM_KAFKA_HOME=/x", "FLUXSTREAM_CLUSTER=c1"}})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Cluster != "c1" {
		t.Fatalf("cluster %q, want the override c1", cfg.Cluster)
	}
}
