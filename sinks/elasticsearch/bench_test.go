package elasticsearch

import (
	"fmt"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/internal/estest"
)

// BenchmarkBulkFixture indexes the bulk fixture (22000 events of 2000
// jobs: 22000 event documents and 22000 job-document versions) into the
// real node, in batches of 1000 records, with 1 and 4 bulk requests in
// flight. docs/s counts bulk actions (event creates + job indexes).
func BenchmarkBulkFixture(b *testing.B) {
	node := estest.Start(b)
	recs := bulk2000(b)
	for _, inflight := range []int{1, 4} {
		b.Run(fmt.Sprintf("in_flight=%d", inflight), func(b *testing.B) {
			var actions int
			var elapsed time.Duration
			for range b.N {
				b.StopTimer()
				prefix := estest.Prefix()
				node.Cleanup(b, prefix)
				s := newSink(b, node.URL, sinkYAML(prefix, "native", fmt.Sprintf("in_flight: %d\nflush: {max_records: 500, interval: 0s}\n", inflight)))
				b.StartTimer()
				start := time.Now()
				if perm, _ := deliver(b, s, recs, 1000); len(perm) > 0 {
					b.Fatal(first(perm))
				}
				elapsed += time.Since(start)
				actions += 2 * len(recs)
			}
			b.ReportMetric(float64(actions)/elapsed.Seconds(), "docs/s")
		})
	}
}
