package kafka_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/core/coretest"
	"github.com/fluxstream/fluxstream/internal/kafkatest"
	"github.com/fluxstream/fluxstream/sinks/kafka"
)

// Configs that cannot be exactly-once are refused at validate, each
// error at its file position.
func TestExactlyOnceConfigErrors(t *testing.T) {
	const flux = "cluster: test\nsources:\n  flux: {type: flux, uri: 'local:///nowhere'}\n" // lines 1-3
	// sink k is on line 5, its exactly_once on line 10, then extra lines
	sink := func(inputs, extra string) string {
		return "sinks:\n  k:\n    type: kafka\n    inputs: [" + inputs + "]\n    brokers: ['127.0.0.1:9092']\n" +
			"    topic: flux.jobs\n    exactly_once: true\n" + extra
	}
	mem := "    buffer: {type: memory}\n"
	for _, tc := range []struct {
		name, yaml, want string
	}{
		{"disk spool", flux + sink("flux", ""),
			"test.yaml:5: sinks.k.buffer.type: exactly_once needs buffer: {type: memory}: a disk spool acknowledges"},
		{"drop oldest", flux + sink("flux", "    buffer: {type: memory, when_full: drop_oldest}\n"),
			"test.yaml:11: sinks.k.buffer.when_full: exactly_once cannot drop records"},
		{"not idempotent", flux + sink("flux", "    idempotent: false\n"+mem),
			"test.yaml:11: sinks.k.idempotent: exactly_once needs the idempotent producer"},
		{"fan-out", flux + sink("flux", mem) + "  archive: {type: file, inputs: [flux], path: /tmp/x.jsonl}\n",
			"test.yaml:10: sinks.k.exactly_once: exactly_once: source flux also feeds sink(s) archive"},
		{"two paths", flux + "transforms:\n  r: {type: route, inputs: [flux], routes: {a: 'true'}}\n" + sink("r, r.a", mem),
			"test.yaml:12: sinks.k.exactly_once: exactly_once: records of source flux reach this sink by 2 paths"},
		{"two sources", flux + "  other: {type: replay, path: x.jsonl}\n" + sink("flux, other", mem),
			"test.yaml:11: sinks.k.exactly_once: exactly_once: the sink must read exactly one source (it keeps that source's checkpoint); it reads 2: flux, other"},
		{"kafka source", "cluster: test\nsources:\n  in: {type: kafka, brokers: ['127.0.0.1:9092'], topics: [t], group: g}\n" + sink("in", mem),
			"test.yaml:10: sinks.k.exactly_once: exactly_once: source in (type kafka) has no checkpoint this sink can carry; exactly_once needs a flux or replay source"},
		{"template without cluster", strings.TrimPrefix(flux, "cluster: test\n") + strings.Replace(sink("flux", mem), "flux.jobs", "'flux.{{cluster}}.jobs'", 1),
			"sinks.k.checkpoint_topic: exactly_once with a topic template needs checkpoint_topic"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := core.LoadConfig("test.yaml", []byte(tc.yaml), core.LoadOptions{Environ: []string{}})
			if err == nil {
				_, err = core.Build(cfg, registry())
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("config:\n%s\nerror: %v\nwant: %s", tc.yaml, err, tc.want)
			}
		})
	}
	coretest.Build(t, registry(), flux+sink("flux", mem))
	coretest.Build(t, registry(), flux+strings.Replace(sink("flux", mem), "flux.jobs", "'flux.{{cluster}}.jobs'", 1))
}

// readCommitted reads topic as a read_committed consumer (see
// kafkatest.ReadCommitted): record id -> count, and the records.
func readCommitted(t testing.TB, addrs []string, topic string) (map[string]int, []*kgo.Record) {
	t.Helper()
	recs := kafkatest.ReadCommitted(t, addrs, topic)
	ids := map[string]int{}
	for _, r := range recs {
		ids[header(r, kafka.HeaderID)]++
	}
	return ids, recs
}

// wantIDs runs the replay of journal into a file and returns its ids.
func wantIDs(t testing.TB, journal string) map[string]bool {
	t.Helper()
	dir := t.TempDir()
	out := filepath.Join(dir, "want.jsonl")
	g := coretest.Build(t, registry(), fmt.Sprintf(`
cluster: test
sources:
  journal: {type: replay, path: %s, user_lookup: none}
sinks:
  want: {type: file, inputs: [journal], path: %s}
`, journal, out))
	if err := core.NewPipeline(g, core.RunOptions{DataDir: dir, Logger: coretest.Quiet()}).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	recs, _ := fileRecords(t, out)
	ids := map[string]bool{}
	for id := range recs {
		ids[id] = true
	}
	return ids
}

func eoConfig(addrs []string, topic, journal string) string {
	return fmt.Sprintf(`
cluster: test
sources:
  journal: {type: replay, path: %s, user_lookup: none}
transforms:
  avro: {type: avro, inputs: [journal], encoding: single-object}
sinks:
  kafka:
    type: kafka
    inputs: [avro]
    brokers: [%s]
    topic: %s
    exactly_once: true
    transactional_id: %s
    delivery_timeout: 2s
    dial_timeout: 2s
    buffer: {type: memory, max_records: 2000}
    batch: {max_records: 500}
    retry: {initial_backoff: 50ms, max_backoff: 500ms}
`, journal, strings.Join(addrs, ", "), topic, topic)
}

// A replay through avro into Kafka with exactly_once: a read_committed
// consumer (franz-go, and kcat) sees every record once. A second run
// with a fresh data_dir (no state.db) sends nothing: the checkpoint is
// in Kafka, in a compacted topic of one partition.
func TestExactlyOnceReplay(t *testing.T) {
	a := kafkatest.SharedApache(t)
	topic := kafkatest.TopicName(t)
	a.CreateTopic(t, topic, 3, nil)
	journal := testdata + "/journal-scenario-live-full.jsonl"
	want := wantIDs(t, journal)

	run := func() {
		g := coretest.Build(t, registry(), eoConfig(a.Addrs(), topic, journal))
		if err := core.NewPipeline(g, core.RunOptions{DataDir: t.TempDir(), Logger: coretest.Quiet()}).Run(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	run()
	got, recs := readCommitted(t, a.Addrs(), topic)
	checkOnce(t, got, want)
	if ct := header(recs[0], kafka.HeaderContent); ct != "application/vnd.apache.avro+binary" {
		t.Fatalf("the values are not Avro single-object: content-type %q", ct)
	}

	run() // a fresh data_dir: the position comes from Kafka
	got, _ = readCommitted(t, a.Addrs(), topic)
	checkOnce(t, got, want)

	ckTopic := topic + ".fluxstream-checkpoint"
	adm := a.Admin(t)
	ctx := context.Background()
	md, err := adm.Metadata(ctx, ckTopic)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(md.Topics[ckTopic].Partitions); n != 1 {
		t.Fatalf("checkpoint topic %s has %d partitions", ckTopic, n)
	}
	rcs, err := adm.DescribeTopicConfigs(ctx, ckTopic)
	if err != nil {
		t.Fatal(err)
	}
	rc, _ := rcs.On(ckTopic, nil)
	for _, c := range rc.Configs {
		if c.Key == "cleanup.policy" && c.MaybeValue() != "compact" {
			t.Fatalf("checkpoint topic cleanup.policy=%s", c.MaybeValue())
		}
	}
	t.Logf("%d records exactly once, twice run (the second with no state.db)", len(want))
	checkOnce(t, kafkatest.KcatCommitted(t, a.Addrs()[0], topic, kafka.HeaderID), want)
}

// checkOnce asserts got holds every id of want exactly once, and nothing
// else.
func checkOnce(t testing.TB, got map[string]int, want map[string]bool) {
	t.Helper()
	var dups, missing, extra []string
	for id, n := range got {
		if n > 1 {
			dups = append(dups, fmt.Sprintf("%s x%d", id, n))
		}
		if !want[id] {
			extra = append(extra, id)
		}
	}
	for id := range want {
		if got[id] == 0 {
			missing = append(missing, id)
		}
	}
	if len(dups)+len(missing)+len(extra) > 0 {
		t.Fatalf("%d ids read: %d duplicated (e.g. %v), %d missing (e.g. %v), %d never sent (e.g. %v)",
			len(got), len(dups), first(dups), len(missing), first(missing), len(extra), first(extra))
	}
}

func first(s []string) []string { return s[:min(3, len(s))] }

// The broker goes away in the middle of the run and comes back: the
// transactions that fail are aborted and their batches go again in new
// ones; a read_committed consumer sees every record once, a
// read_uncommitted one may see the aborted attempts too.
func TestExactlyOnceBrokerRestart(t *testing.T) {
	a := kafkatest.StartApache(t, kafkatest.ApacheOptions{})
	topic := "flux.eo.jobs"
	a.CreateTopic(t, topic, 3, nil)
	journal := testdata + "/journal-bulk2000-live.jsonl.gz"
	want := wantIDs(t, journal)

	g := coretest.Build(t, registry(), eoConfig(a.Addrs(), topic, journal))
	p := core.NewPipeline(g, core.RunOptions{DataDir: t.TempDir(), Logger: coretest.Quiet()})
	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background()) }()
	sinkOut := func() int64 {
		for _, s := range p.Stats() {
			if s.Node == "kafka" {
				return s.Out
			}
		}
		return 0
	}
	poll(t, "some records delivered", func() bool { return sinkOut() > 2000 })
	a.KillNode(0) // SIGKILL: transactions in flight are cut
	poll(t, "a failed write retried", func() bool {
		for _, s := range p.Stats() {
			if s.Node == "kafka" && s.Retries > 0 {
				return true
			}
		}
		return false
	})
	a.StartNode(0)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Minute):
		t.Fatal("the run did not finish after the broker came back")
	}
	got, _ := readCommitted(t, a.Addrs(), topic)
	checkOnce(t, got, want)
	var retries int64
	for _, s := range p.Stats() {
		if s.Node == "kafka" {
			retries = s.Retries
		}
	}
	t.Logf("%d records exactly once across a broker kill -9 mid-run (%d failed transactions retried)", len(want), retries)
}

// BenchmarkKafkaExactlyOnce compares the sink with and without
// exactly_once on real Kafka (the shared one-node cluster): the bulk
// journal (22,001 records) replayed to JSON values, memory buffer for
// both. records/s is wall time; records/cpu-s counts this process's CPU
// (not the broker's).
func BenchmarkKafkaExactlyOnce(b *testing.B) {
	a := kafkatest.SharedApache(b)
	journal := testdata + "/journal-bulk2000-live.jsonl.gz"
	for _, mode := range []string{"plain", "exactly_once"} {
		b.Run(mode, func(b *testing.B) {
			var n int64
			var cpu time.Duration
			for b.Loop() {
				b.StopTimer()
				topic := kafkatest.TopicName(b)
				a.CreateTopic(b, topic, 3, nil)
				cfg := fmt.Sprintf(`
cluster: test
sources:
  journal: {type: replay, path: %s, user_lookup: none}
sinks:
  kafka:
    type: kafka
    inputs: [journal]
    brokers: [%s]
    topic: %s
    exactly_once: %v
    transactional_id: %s
    buffer: {type: memory, max_records: 5000}
    batch: {max_records: 1000}
`, journal, strings.Join(a.Addrs(), ", "), topic, mode == "exactly_once", topic)
				g := coretest.Build(b, registry(), cfg)
				p := core.NewPipeline(g, core.RunOptions{DataDir: b.TempDir(), Logger: coretest.Quiet()})
				c0 := cpuTime()
				b.StartTimer()
				if err := p.Run(context.Background()); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				cpu += cpuTime() - c0
				for _, s := range p.Stats() {
					if s.Node == "kafka" {
						n += s.Out
					}
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
			b.ReportMetric(float64(n)/cpu.Seconds(), "records/cpu-s")
		})
	}
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(errors.New("getrusage: " + err.Error()))
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
