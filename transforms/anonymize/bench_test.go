package anonymize

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/internal/transformtest"
)

const bulk = transformtest.Bulk

// The default profile on the bulk run, raw jobspec (and R) on every
// record. Each pass over the fixture starts with empty caches (SetKey
// empties them), as a run sees each record once.
func BenchmarkAnonymize(b *testing.B) {
	for _, inc := range []struct{ name, yaml string }{
		{"jobspec+R", "include: {jobspec: always, R: always}\n"},
		{"jobspec+R+eventlog", includeAll},
	} {
		b.Run(inc.name, func(b *testing.B) {
			recs := records(b, bulk, inc.yaml)
			tr := newTransform(b, "")
			transformtest.Bench(b, recs, func() core.Transform { tr.SetKey([]byte(testKey)); return tr })
		})
	}
}

// End to end: replay (the bulk journal, jobspec and R on every record) ->
// anonymize -> avro -> file sink (Avro container file, fsync per batch),
// through the real runtime and disk spool.
func BenchmarkEndToEnd(b *testing.B) {
	dir := b.TempDir()
	key := filepath.Join(dir, "anon.key")
	os.WriteFile(key, []byte(testKey), 0o600)
	var recs int64
	b.ResetTimer()
	start := transformtest.CPUTime()
	t0 := time.Now()
	for i := 0; i < b.N; i++ {
		data := filepath.Join(dir, "run", string(rune('a'+i%26)), time.Now().Format("150405.000000000"))
		cfg := `data_dir: ` + data + `
sources:
  journal: {type: replay, path: ` + bulk + `, user_lookup: none, include: {jobspec: always, R: always}}
transforms:
  anon: {type: anonymize, inputs: [journal], key_file: ` + key + `}
  avro: {type: avro, inputs: [anon], encoding: single-object}
sinks:
  out: {type: file, inputs: [avro], path: ` + data + `/out.avro, format: avro}
`
		loaded, err := core.LoadConfig("e2e.yaml", []byte(cfg), core.LoadOptions{Environ: []string{}})
		if err != nil {
			b.Fatal(err)
		}
		g, err := core.Build(loaded, builtinRegistry())
		if err != nil {
			b.Fatal(err)
		}
		p := core.NewPipeline(g, core.RunOptions{Logger: slog.New(slog.DiscardHandler)})
		if err := p.Run(context.Background()); err != nil {
			b.Fatal(err)
		}
		recs += 22000
	}
	wall, cpu := time.Since(t0), transformtest.CPUTime()-start
	b.ReportMetric(float64(recs)/wall.Seconds(), "records/s")
	b.ReportMetric(float64(recs)/cpu.Seconds(), "records/cpu-s")
}

// One bulk jobspec and one submit context through the editor (no
// cache), under the default profile.
func BenchmarkEdit(b *testing.B) {
	recs := records(b, bulk, transformtest.IncludeRaw)
	tr := newTransform(b, "")
	for _, c := range []struct {
		name string
		src  []byte
		at   root
	}{
		{"jobspec", recs[0].Jobspec, tr.roots[partJobspec]},
		{"submit", recs[0].Event.Context, tr.contextRoot("submit")},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := tr.edit(c.src, c.at, false); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
