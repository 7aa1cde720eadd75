package metrics_test

import (
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core/coretest"
	"github.com/fluxstream/fluxstream/internal/metrics"
)

// BenchmarkObserveWrite is what the two histograms cost per written batch
// (the only metrics work on the record path).
func BenchmarkObserveWrite(b *testing.B) {
	m := metrics.New(metrics.Options{Logger: coretest.Quiet()})
	fail := errors.New("down")
	b.ReportAllocs()
	i := 0
	cpu0 := cpuTime()
	for b.Loop() {
		var err error
		if i%8 == 0 {
			err = fail
		}
		m.ObserveWrite("kafka", 500, 3*time.Millisecond, err)
		i++
	}
	b.ReportMetric(float64(cpuTime()-cpu0)/float64(i), "cpu-ns/op")
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
