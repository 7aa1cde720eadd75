package kafka_test

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/internal/kafkatest"
	"github.com/fluxstream/fluxstream/sinks/kafka"
)

// bulkRecords are the records of the bulk journal (22,000), as the
// replay source emits them, decoded from a file sink's JSON lines.
func bulkRecords(b *testing.B) []*core.Record {
	dir := b.TempDir()
	out := filepath.Join(dir, "records.jsonl")
	g := build(b, fmt.Sprintf(`
sources:
  journal: {type: replay, path: %s/journal-bulk2000-live.jsonl.gz, user_lookup: none}
sinks:
  json: {type: file, inputs: [journal], path: %s}
`, testdata, out))
	if err := core.NewPipeline(g, core.RunOptions{DataDir: dir, Logger: quiet()}).Run(context.Background()); err != nil {
		b.Fatal(err)
	}
	byID, order := fileRecords(b, out)
	recs := make([]*core.Record, 0, len(order))
	for _, id := range order {
		var r core.Record
		if err := json.Unmarshal([]byte(byID[id]), &r); err != nil {
			b.Fatal(err)
		}
		recs = append(recs, &r)
	}
	return recs
}

// BenchmarkSinkWrite is the kafka sink alone (its Write, JSON values,
// lz4, acks=all, idempotent) writing the bulk journal's 22,000 records
// in batches of 1000, the runtime's default, to kfake (3 brokers, one
// process) and to Apache Kafka (the shared node). Reported: records/s
// (wall), records per CPU-second of this process (the sink and
// franz-go) and of the broker process(es), and the load average at the
// end (the machine is shared).
func BenchmarkSinkWrite(b *testing.B) {
	recs := bulkRecords(b)
	for _, peer := range kafkatest.Peers {
		b.Run(peer.Name, func(b *testing.B) {
			topic := kafkatest.TopicName(b)
			c := peer.Start(b, kafkatest.PeerOptions{Topics: map[string]int{topic: 6}})
			s := newSink(b, fmt.Sprintf("brokers: [%s]\ntopic: %s\n", strings.Join(c.Addrs(), ", "), topic), quiet())
			benchWrite(b, s, c, recs)
		})
	}
}

func benchWrite(b *testing.B, s *kafka.Sink, c kafkatest.Peer, recs []*core.Record) {
	ctx := context.Background()
	var wall, self, broker time.Duration
	n := 0
	for b.Loop() {
		cpu0, bcpu0, t0 := kafkatest.SelfCPU(), kafkatest.PeersCPU(c.Pids()), time.Now()
		for i := 0; i < len(recs); i += 1000 {
			if err := s.Write(ctx, recs[i:min(i+1000, len(recs))]); err != nil {
				b.Fatal(err)
			}
		}
		wall += time.Since(t0)
		self += kafkatest.SelfCPU() - cpu0
		broker += kafkatest.PeersCPU(c.Pids()) - bcpu0
		n += len(recs)
	}
	b.ReportMetric(float64(n)/wall.Seconds(), "records/s")
	b.ReportMetric(float64(n)/self.Seconds(), "records/cpu-s")
	b.ReportMetric(float64(n)/broker.Seconds(), "records/broker-cpu-s")
	b.ReportMetric(kafkatest.LoadAvg(), "loadavg")
}
