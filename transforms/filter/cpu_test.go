package filter_test

import (
	"syscall"
	"testing"
	"time"
)

// cpuTime is the CPU time (user + system) the process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// perCPU runs the benchmark loop and reports records per CPU second
// besides the wall-clock figures: the test machines are shared and
// loaded, so wall time says more about the neighbours than about us.
func perCPU(b *testing.B, loop func()) {
	b.ReportAllocs()
	b.ResetTimer()
	start := cpuTime()
	loop()
	cpu := cpuTime() - start
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "records/s")
	if cpu > 0 {
		b.ReportMetric(float64(b.N)/cpu.Seconds(), "records/cpu-s")
	}
}
