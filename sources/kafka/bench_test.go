package kafka_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/core/coretest"
	"github.com/fluxstream/fluxstream/internal/kafkatest"
)

// benchTopics are the topics of this benchmark run on the shared Apache
// Kafka node, each produced once, when a benchmark first needs it:
// "bulk", the bulk journal through the kafka sink (JSON, 12 partitions);
// "1.1M", those messages 50 times over.
var benchTopics struct {
	mu          sync.Mutex
	bulk, big   string
	nBulk, nBig int
}

func benchTopic(b *testing.B, a *kafkatest.Apache, big bool) (string, int) {
	benchTopics.mu.Lock()
	defer benchTopics.mu.Unlock()
	if benchTopics.bulk == "" {
		topic := kafkatest.TopicName(b) + "-bulk"
		a.CreateTopic(b, topic, 12, nil)
		want, _ := produceB(b, a, topic)
		if n := len(a.Records(b, topic)); n != len(want) {
			b.Fatalf("bulk topic has %d messages, the journal %d records", n, len(want))
		}
		benchTopics.bulk, benchTopics.nBulk = topic, len(want)
	}
	if !big {
		return benchTopics.bulk, benchTopics.nBulk
	}
	if benchTopics.big == "" {
		msgs := a.Records(b, benchTopics.bulk)
		topic := kafkatest.TopicName(b) + "-1.1M"
		a.CreateTopic(b, topic, 12, nil)
		cl := a.Client(b, kgo.ProducerBatchCompression(kgo.Lz4Compression()), kgo.ProducerBatchMaxBytes(1<<20),
			kgo.MaxBufferedRecords(50000), kgo.RecordPartitioner(kgo.StickyKeyPartitioner(nil)))
		ctx := context.Background()
		var errs sync.Map
		for range 50 {
			for _, m := range msgs {
				cl.Produce(ctx, &kgo.Record{Topic: topic, Key: m.Key, Value: m.Value, Headers: m.Headers},
					func(_ *kgo.Record, err error) {
						if err != nil {
							errs.Store(0, err)
						}
					})
			}
		}
		if err := cl.Flush(ctx); err != nil {
			b.Fatal(err)
		}
		if err, ok := errs.Load(0); ok {
			b.Fatal(err)
		}
		benchTopics.big, benchTopics.nBig = topic, 50*len(msgs)
	}
	return benchTopics.big, benchTopics.nBig
}

// produceB is produce (journal -> kafka sink, JSON) for a benchmark.
func produceB(b *testing.B, a *kafkatest.Apache, topic string) (map[string]string, []string) {
	dir := b.TempDir()
	want := filepath.Join(dir, "want.jsonl")
	g := coretest.Build(b, registry(), fmt.Sprintf(`
cluster: test
sources:
  journal: {type: replay, path: %s/journal-bulk2000-live.jsonl.gz, user_lookup: none}
sinks:
  kafka: {type: kafka, inputs: [journal], brokers: [%s], topic: %s}
  want: {type: file, inputs: [journal], path: %s}
`, testdata, strings.Join(a.Addrs(), ", "), topic, want))
	if err := core.NewPipeline(g, core.RunOptions{DataDir: dir, Logger: coretest.Quiet()}).Run(context.Background()); err != nil {
		b.Fatal(err)
	}
	return lines(b, want)
}

// BenchmarkSourceToFile: kafka source -> file sink (disk spool, fsync
// per batch) on real Apache Kafka, 1 and 3 consumers in one group (three
// pipelines in this process), on the bulk topic (22,000 records) and the
// 1.1M-record one. An iteration is a new group reading the topic from
// the start until its committed offsets reach the end offsets (every
// record durably in a file). Reported: records/s (wall), records per
// CPU-second of this process (fluxstream's work) and of the broker's
// JVM, and the load average at the end (the machine is shared).
func BenchmarkSourceToFile(b *testing.B) {
	a := kafkatest.SharedApache(b)
	for _, tc := range []struct {
		name string
		big  bool
	}{{"bulk22k", false}, {"1.1M", true}} {
		for _, consumers := range []int{1, 3} {
			b.Run(fmt.Sprintf("%s/consumers=%d", tc.name, consumers), func(b *testing.B) {
				topic, n := benchTopic(b, a, tc.big)
				benchSourceToFile(b, a, topic, n, consumers)
			})
		}
	}
}

func benchSourceToFile(b *testing.B, a *kafkatest.Apache, topic string, n, consumers int) {
	adm := a.Admin(b)
	ends, err := adm.ListEndOffsets(context.Background(), topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		b.Fatal(err)
	}
	var wall, self, broker time.Duration
	iter := 0
	for b.Loop() {
		iter++
		group := fmt.Sprintf("%s-g%d-%d", topic, consumers, iter)
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, consumers)
		cpu0, bcpu0, t0 := kafkatest.SelfCPU(), kafkatest.PeersCPU(a.Pids()), time.Now()
		for i := range consumers {
			dir := b.TempDir()
			g := coretest.Build(b, registry(), fmt.Sprintf(`
sources:
  kafka: {type: kafka, brokers: [%s], topics: [%s], group: %s, session_timeout: 6s, heartbeat_interval: 500ms}
sinks:
  got: {type: file, inputs: [kafka], path: %s/got-%d.jsonl}
`, strings.Join(a.Addrs(), ", "), topic, group, dir, i))
			go func() {
				errc <- core.NewPipeline(g, core.RunOptions{DataDir: dir, Logger: coretest.Quiet(), ShutdownTimeout: 30 * time.Second}).Run(ctx)
			}()
		}
		waitCommitted(b, adm, ends, topic, group, errc)
		d, c, bc := time.Since(t0), kafkatest.SelfCPU()-cpu0, kafkatest.PeersCPU(a.Pids())-bcpu0
		wall, self, broker = wall+d, self+c, broker+bc
		cancel()
		for range consumers {
			if err := <-errc; err != nil {
				b.Fatal(err)
			}
		}
	}
	recs := float64(n * iter)
	b.ReportMetric(recs/wall.Seconds(), "records/s")
	b.ReportMetric(recs/self.Seconds(), "records/cpu-s")
	b.ReportMetric(recs/broker.Seconds(), "records/broker-cpu-s")
	b.ReportMetric(kafkatest.LoadAvg(), "loadavg")
}

// waitCommitted polls until group committed the end offsets of topic.
func waitCommitted(b *testing.B, adm *kadm.Client, ends kadm.ListedOffsets, topic, group string, errc chan error) {
	deadline := time.Now().Add(10 * time.Minute)
	for {
		com, err := adm.FetchOffsets(context.Background(), group)
		ok := err == nil
		ends.Each(func(e kadm.ListedOffset) {
			c, found := com.Lookup(topic, e.Partition)
			ok = ok && found && c.At == e.Offset
		})
		if ok {
			return
		}
		select {
		case err := <-errc:
			b.Fatalf("a pipeline ended early: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			b.Fatalf("group %s: not all committed after 10 minutes: %v", group, com)
		}
		time.Sleep(50 * time.Millisecond) // polling the group's state
	}
}
