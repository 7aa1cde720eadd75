package kafka_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/core/coretest"
	"github.com/fluxstream/fluxstream/internal/kafkatest"
	kafkasource "github.com/fluxstream/fluxstream/sources/kafka"
)

// While the only sink cannot write (behind a memory buffer, which
// acknowledges only what it delivered), nothing is committed: the lag of
// the partitions adds up to every message of the topic. Once the sink
// writes, the lag goes to zero.
func TestConsumerLag(t *testing.T) {
	a := kafkatest.SharedApache(t)
	topic := kafkatest.TopicName(t)
	a.CreateTopic(t, topic, 3, nil)
	produce(t, a, topic, "journal-scenario-live-full.jsonl", "json", "")
	total := int64(len(a.Records(t, topic)))
	if total < 100 {
		t.Fatalf("only %d messages produced", total)
	}
	dir := t.TempDir()
	blocker := filepath.Join(dir, "blocker")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	g := coretest.Build(t, registry(), fmt.Sprintf(`
sources:
  kafka:
    type: kafka
    brokers: [%s]
    topics: [%s]
    group: %s-g
    session_timeout: 6s
    heartbeat_interval: 500ms
    commit_interval: 50ms
sinks:
  got:
    type: file
    inputs: [kafka]
    path: %s/got.jsonl
    buffer: {type: memory, max_records: 100000}
    retry: {initial_backoff: 10ms, max_backoff: 50ms}
`, strings.Join(a.Addrs(), ", "), topic, topic, blocker))
	p := core.NewPipeline(g, core.RunOptions{DataDir: dir, Logger: coretest.Quiet(), ShutdownTimeout: 10 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- p.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-errc; err != nil {
			t.Errorf("pipeline: %v", err)
		}
	}()

	lag := func() (sum int64, parts int) {
		src, _ := p.Node("kafka").(*kafkasource.Source)
		if src == nil {
			return -1, 0
		}
		for _, l := range src.ConsumerLag() {
			if l.Topic != topic || l.Lag < 0 {
				t.Fatalf("lag entry %+v", l)
			}
			sum += l.Lag
			parts++
		}
		return sum, parts
	}
	waitLag := func(what string, want int64) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for {
			sum, parts := lag()
			if sum == want && parts == 3 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: lag %d over %d partitions, want %d over 3", what, sum, parts, want)
			}
			time.Sleep(20 * time.Millisecond) // polling the consumer's state
		}
	}
	waitLag("sink stuck", total)
	if err := os.Remove(blocker); err != nil {
		t.Fatal(err)
	}
	waitLag("sink writing", 0)
}
