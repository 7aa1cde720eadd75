package core_test

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkPipelineMemory runs 200k records in batches of 100 from a
// generator through a memory buffer into a sink that keeps ids: the
// runtime's own cost per record (and so what the metrics hooks add per
// batch), in records per CPU-second of the whole process.
func BenchmarkPipelineMemory(b *testing.B) {
	const n = 200_000
	var recs int
	cpu0 := cpuTime()
	for b.Loop() {
		reg, _ := testRegistry()
		g := buildWith(b, reg, fmt.Sprintf(`
sources:
  gen: {type: gen, count: %d, batch: 100}
sinks:
  out: {type: mem, inputs: [gen], buffer: {type: memory, max_records: 10000}, batch: {max_records: 100}}
`, n))
		p := core.NewPipeline(g, core.RunOptions{DataDir: b.TempDir(), Logger: quietLogger()})
		if err := p.Run(context.Background()); err != nil {
			b.Fatal(err)
		}
		recs += n
	}
	cpu := cpuTime() - cpu0
	b.ReportMetric(float64(recs)/cpu.Seconds(), "records/cpu-s")
	b.ReportMetric(0, "ns/op")
}
