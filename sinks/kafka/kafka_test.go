package kafka_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/core/coretest"
	"github.com/fluxstream/fluxstream/internal/crosscheck"
	"github.com/fluxstream/fluxstream/internal/kafkatest"
	"github.com/fluxstream/fluxstream/internal/srtest"
	"github.com/fluxstream/fluxstream/schemas"
	"github.com/fluxstream/fluxstream/sinks/file"
	"github.com/fluxstream/fluxstream/sinks/kafka"
	"github.com/fluxstream/fluxstream/sources/flux"
	"github.com/fluxstream/fluxstream/sources/flux/fluxtest"
	ksource "github.com/fluxstream/fluxstream/sources/kafka"
	"github.com/fluxstream/fluxstream/sources/replay"
	"github.com/fluxstream/fluxstream/transforms/avro"
	"github.com/fluxstream/fluxstream/transforms/route"
)

const (
	testdata = "../../testdata/flux"
	topic    = "flux.test.jobs"
)

func quiet() *slog.Logger { return coretest.Quiet() }

func registry() *core.Registry {
	r := core.NewRegistry()
	replay.Register(r)
	flux.Register(r)
	ksource.Register(r)
	avro.Register(r)
	route.Register(r)
	kafka.Register(r)
	file.Register(r)
	return r
}

func build(t testing.TB, yaml string) *core.Graph {
	t.Helper()
	return coretest.Build(t, registry(), yaml)
}

// fileRecords reads a file sink's output: record id -> JSON line.
func fileRecords(t testing.TB, path string) (map[string]string, []string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[string]string{}
	var order []string
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var r struct{ ID string }
		json.Unmarshal(sc.Bytes(), &r)
		out[r.ID] = sc.Text()
		order = append(order, r.ID)
	}
	return out, order
}

func header(r *kgo.Record, key string) string {
	for _, h := range r.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// forPeers runs body as a subtest against kfake and against Apache Kafka.
func forPeers(t *testing.T, body func(t *testing.T, p kafkatest.PeerKind)) {
	for _, p := range kafkatest.Peers {
		t.Run(p.Name, func(t *testing.T) { body(t, p) })
	}
}

// The bulk journal goes through avro (Confluent framing, the schema
// registered in srtest) into Kafka and comes back: every record once,
// keyed by job, each job's events in journal order in one partition, the
// Avro value equal to the JSON record.
func TestBulkThroughAvro(t *testing.T) { forPeers(t, testBulkThroughAvro) }

func testBulkThroughAvro(t *testing.T, peer kafkatest.PeerKind) {
	topic := kafkatest.TopicName(t)
	cluster := peer.Start(t, kafkatest.PeerOptions{Topics: map[string]int{topic: 3}})
	reg := srtest.New()
	defer reg.Close()
	dir := t.TempDir()
	out := filepath.Join(dir, "records.jsonl")
	g := build(t, fmt.Sprintf(`
cluster: test
sources:
  journal: {type: replay, path: %s/journal-bulk2000-live.jsonl.gz, user_lookup: none}
transforms:
  avro:
    type: avro
    inputs: [journal]
    registry: {urls: [%s], subject: %s-value}
sinks:
  kafka:
    type: kafka
    inputs: [avro]
    brokers: [%s]
    topic: %s
    batch: {max_records: 100} # many batches on their way at once (inflight_batches: 4)
  json:
    type: file
    inputs: [journal]
    path: %s
`, testdata, reg.URL(), topic, strings.Join(cluster.Addrs(), ", "), topic, out))
	if err := core.NewPipeline(g, core.RunOptions{DataDir: dir, Logger: quiet()}).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	want, order := fileRecords(t, out)
	if len(want) != 22000 {
		t.Fatalf("file sink has %d records", len(want))
	}
	schemaID := g.Node("avro").Impl.(*avro.Transform).SchemaID()
	got := cluster.Records(t, topic)
	if len(got) != 22000 {
		t.Fatalf("kafka has %d records, want 22000", len(got))
	}
	seen := map[string]bool{}
	partitionOf := map[string]int32{}
	perKey := map[string][]string{}
	for _, m := range got {
		id := header(m, kafka.HeaderID)
		if seen[id] {
			t.Fatalf("%s twice", id)
		}
		seen[id] = true
		rec, sid, err := schemas.Decode(schemas.FormatConfluent, m.Value)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		js, _ := rec.JSON()
		if string(js) != want[id] {
			t.Fatalf("%s: Avro decodes to\n%s\nthe JSON record is\n%s", id, js, want[id])
		}
		if sid != schemaID || header(m, kafka.HeaderSchemaID) != fmt.Sprint(schemaID) ||
			header(m, kafka.HeaderContent) != "application/vnd.confluent.avro" || header(m, kafka.HeaderCluster) != "test" ||
			header(m, kafka.HeaderEvent) != rec.Event.Name || string(m.Key) != fmt.Sprint(rec.Job.ID) {
			t.Fatalf("%s: key %s headers %v schema id %d (registry %d)", id, m.Key, m.Headers, sid, schemaID)
		}
		key := string(m.Key)
		if p, ok := partitionOf[key]; ok && p != m.Partition {
			t.Fatalf("job %s in partitions %d and %d", key, p, m.Partition)
		}
		partitionOf[key] = m.Partition
		perKey[key] = append(perKey[key], id)
	}
	// Per job, Kafka order is journal order.
	journal := map[string][]string{}
	for _, id := range order {
		key, _, _ := strings.Cut(id, ":")
		journal[key] = append(journal[key], id)
	}
	for key, ids := range journal {
		if strings.Join(perKey[key], " ") != strings.Join(ids, " ") {
			t.Fatalf("job %s: kafka order %v, journal order %v", key, perKey[key], ids)
		}
	}
}

// All brokers go away in the middle of the run: records spool, the source
// keeps reading Flux, the sink's writes fail within delivery_timeout (the
// runtime logs them and retries), and once the brokers are back everything
// arrives once and the runtime logs that the sink recovered. Every wait
// polls a state (streams, stats, ids in Kafka, log lines), none a time.
func TestBrokerOutage(t *testing.T) { forPeers(t, testBrokerOutage) }

func testBrokerOutage(t *testing.T, peer kafkatest.PeerKind) {
	topic := kafkatest.TopicName(t)
	cluster := peer.Start(t, kafkatest.PeerOptions{Topics: map[string]int{topic: 3}, Own: true})
	items, err := fluxtest.LoadTimeline(filepath.Join(testdata, "journal-bulk2000-live.jsonl.gz"))
	if err != nil {
		t.Fatal(err)
	}
	in := fluxtest.NewInstance(items, nil)
	b, err := fluxtest.NewBroker(t.TempDir(), in)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	dir := t.TempDir()
	g := build(t, fmt.Sprintf(`
cluster: test
sources:
  flux: {type: flux, uri: %s, user_lookup: none}
transforms:
  avro: {type: avro, inputs: [flux], encoding: single-object}
sinks:
  kafka:
    type: kafka
    inputs: [avro]
    brokers: [%s]
    topic: %s
    delivery_timeout: 1s
    retry: {initial_backoff: 50ms, max_backoff: 500ms}
`, b.URI(), strings.Join(cluster.Addrs(), ", "), topic))
	var logs logBuffer
	p := core.NewPipeline(g, core.RunOptions{DataDir: dir, Logger: logs.logger(), ShutdownTimeout: 10 * time.Second})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	poll(t, "the source to connect", func() bool { return b.Streams() > 0 })
	want := map[string]bool{}
	for _, it := range items {
		for _, e := range it.Response.Events {
			want[core.EventID(uint64(it.Response.ID), e.Name, e.Timestamp)] = true
		}
	}
	stats := func() (src, sink core.StatsSnapshot) {
		for _, s := range p.Stats() {
			switch s.Node {
			case "flux":
				src = s
			case "kafka":
				sink = s
			}
		}
		return src, sink
	}

	in.Step(len(items) / 2)
	poll(t, "5000 records in Kafka", func() bool { _, sink := stats(); return sink.Out >= 5000 })
	cluster.Stop()      // the whole cluster goes down
	in.Step(len(items)) // Flux goes on while Kafka is away
	// The source took everything; the rest waits in the spool, and the
	// sink's writes fail and are retried: the outage is visible.
	poll(t, "the source to emit all and the sink to retry", func() bool {
		src, sink := stats()
		return src.Out == int64(len(want)) && sink.PendingRecords > 0 && sink.Retries >= 2
	})
	src, sink := stats()
	t.Logf("during the outage: source emitted %d, kafka sink holds %d records (%d bytes) in its spool, %d failed writes retried",
		src.Out, sink.PendingRecords, sink.PendingBytes, sink.Retries)
	failing := findLog(t, &logs, "write failed; retrying")
	if failing == nil || failing["failing_for"] == nil || !strings.Contains(fmt.Sprint(failing["error"]), "not acknowledged within delivery_timeout 1s") {
		t.Fatalf("no write-failed line with failing_for and the timeout: %v\n%s", failing, logs.String())
	}

	cluster.Restart() // and comes back, on the same ports
	// Drained first (a cheap state), then read Kafka.
	poll(t, "the spool to drain", func() bool {
		_, sink := stats()
		return sink.PendingRecords == 0 && sink.InFlight == 0
	})
	var got []*kgo.Record
	poll(t, "every event in Kafka", func() bool {
		got = cluster.Records(t, topic)
		ids := map[string]bool{}
		for _, m := range got {
			ids[header(m, kafka.HeaderID)] = true
		}
		for id := range want {
			if !ids[id] {
				return false
			}
		}
		return true
	})
	poll(t, "the sink-recovered line", func() bool { return findLog(t, &logs, "sink recovered") != nil })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ids := map[string]int{}
	for _, m := range got {
		ids[header(m, kafka.HeaderID)]++
	}
	dups := 0
	for id, n := range ids {
		if !want[id] {
			t.Errorf("Kafka holds %s, which the journal never had", id)
		}
		if n > 1 {
			if dups < 5 {
				t.Errorf("%s is in Kafka %d times", id, n)
			}
			dups += n - 1
		}
	}
	t.Logf("all %d events in Kafka after the outage; %d duplicates", len(want), dups)
}

// poll checks cond until it holds, failing the test after 3 minutes (a
// bound for a loaded machine, not a speed target).
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// findLog returns the first log line whose message starts with msg, nil
// if none.
func findLog(t *testing.T, logs *logBuffer, msg string) map[string]any {
	t.Helper()
	for _, l := range logs.lines(t) {
		if m, _ := l["msg"].(string); strings.HasPrefix(m, msg) {
			return l
		}
	}
	return nil
}

// prepare provisions a sink and prepares it: Prepare's error, or what it
// logged.
func prepare(t *testing.T, yaml string) error {
	t.Helper()
	var logs bytes.Buffer
	s := newSink(t, yaml, slog.New(slog.NewTextHandler(&logs, nil)))
	defer s.Close(context.Background()) // no client logs into logs after
	err := s.Prepare(context.Background())
	if err == nil && logs.Len() > 0 {
		return fmt.Errorf("logged: %s", logs.String())
	}
	return err
}

func TestConnectErrors(t *testing.T) {
	err := prepare(t, "brokers: [no-such-host.invalid:9092]\ntopic: x\ndial_timeout: 2s\n")
	if err == nil || !strings.Contains(err.Error(), `kafka brokers no-such-host.invalid:9092: unknown host "no-such-host.invalid"`) {
		t.Fatalf("unknown host: %v", err)
	}
	// Nothing listens: a broker that is down is not a config error; it is
	// logged and records spool.
	err = prepare(t, "brokers: [127.0.0.1:1]\ntopic: x\ndial_timeout: 1s\n")
	if err == nil || !strings.Contains(err.Error(), "kafka brokers unreachable at start; records are spooled") {
		t.Fatalf("refused port: %v", err)
	}

	user := kafkatest.User{Mechanism: kafkatest.Plain, Name: "fluxstream", Password: "right"}
	cluster := kafkatest.Start(t, kafkatest.Options{Brokers: 1, Topics: map[string]int{topic: 1}, Users: []kafkatest.User{user}})
	base := fmt.Sprintf("brokers: [%s]\ntopic: %s\n", cluster.Addrs()[0], topic)
	err = prepare(t, base+"sasl: {mechanism: PLAIN, username: fluxstream, password: wrong}\n")
	if err == nil || !strings.Contains(err.Error(), "SASL authentication failed (check sasl: username, password, mechanism)") {
		t.Fatalf("wrong password: %v", err)
	}
	if err := prepare(t, base+"sasl: {mechanism: PLAIN, username: fluxstream, password: right}\n"); err != nil {
		t.Fatalf("right password: %v", err)
	}

}

// writeVia builds a kafka sink from yaml, prepares it and writes recs:
// the first error, nil once Kafka acknowledged every record.
func writeVia(t *testing.T, yaml string, recs []*core.Record) error {
	t.Helper()
	s := newSink(t, yaml+"dial_timeout: 2s\ndelivery_timeout: 2s\n", quiet())
	err := s.Prepare(context.Background())
	if err == nil {
		err = s.Write(context.Background(), recs)
	}
	if err != nil {
		// Unacknowledged records: do not wait for them at Close.
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		s.Close(ctx)
	}
	return err
}

// hasIDs reports whether topic holds every record of recs.
func hasIDs(t *testing.T, c kafkatest.Peer, topic string, recs []*core.Record) bool {
	t.Helper()
	got := map[string]bool{}
	for _, m := range c.Records(t, topic) {
		got[header(m, kafka.HeaderID)] = true
	}
	for _, r := range recs {
		if !got[r.ID] {
			return false
		}
	}
	return true
}

// SASL SCRAM-SHA-256 and -512: a user logs in with its own mechanism and
// its records are in Kafka; the other mechanism or a wrong password is
// refused and nothing is written.
func TestSCRAM(t *testing.T) { forPeers(t, testSCRAM) }

func testSCRAM(t *testing.T, peer kafkatest.PeerKind) {
	topic := kafkatest.TopicName(t)
	users := map[string]kafkatest.User{
		kafkatest.ScramSHA256: {Mechanism: kafkatest.ScramSHA256, Name: "fs256-" + topic, Password: "pw-256"},
		kafkatest.ScramSHA512: {Mechanism: kafkatest.ScramSHA512, Name: "fs512-" + topic, Password: "pw-512"},
	}
	c := peer.Start(t, kafkatest.PeerOptions{Topics: map[string]int{topic: 1},
		Users: []kafkatest.User{users[kafkatest.ScramSHA256], users[kafkatest.ScramSHA512]}})
	base := fmt.Sprintf("brokers: [%s]\ntopic: %s\n", strings.Join(c.Addrs(), ", "), topic)
	other := map[string]string{kafkatest.ScramSHA256: kafkatest.ScramSHA512, kafkatest.ScramSHA512: kafkatest.ScramSHA256}
	for i, mech := range []string{kafkatest.ScramSHA256, kafkatest.ScramSHA512} {
		u := users[mech]
		recs := jobRecords(3, 2+i) // distinct ids per mechanism
		if err := writeVia(t, base+fmt.Sprintf("sasl: {mechanism: %s, username: %s, password: %s}\n", mech, u.Name, u.Password), recs); err != nil {
			t.Fatalf("%s as %s: %v", mech, u.Name, err)
		}
		if !hasIDs(t, c, topic, recs) {
			t.Fatalf("%s: Write succeeded but the records are not in Kafka", mech)
		}
		for what, sasl := range map[string]string{
			"the other mechanism": fmt.Sprintf("sasl: {mechanism: %s, username: %s, password: %s}\n", other[mech], u.Name, u.Password),
			"a wrong password":    fmt.Sprintf("sasl: {mechanism: %s, username: %s, password: wrong}\n", mech, u.Name),
		} {
			refused := []*core.Record{{Kind: core.KindEvent, ID: "7:refused:" + mech + what, Cluster: "test",
				Event: &core.Event{Name: "refused", Timestamp: 1}, Job: &core.Job{ID: 7}}}
			err := writeVia(t, base+sasl, refused)
			if err == nil {
				t.Fatalf("%s with %s: written", mech, what)
			}
			// Apache Kafka answers SASL_AUTHENTICATION_FAILED, which
			// Prepare reports; kfake closes the connection on some
			// failures, which looks like a broker that is down.
			if peer.Name == "apache" && !strings.Contains(err.Error(), "SASL authentication failed (check sasl: username, password, mechanism)") {
				t.Errorf("%s with %s: %v", mech, what, err)
			}
			if hasIDs(t, c, topic, refused) {
				t.Errorf("%s with %s: the record is in Kafka", mech, what)
			}
		}
	}
}

func TestConfigErrors(t *testing.T) {
	nc, _ := core.ParseNodeConfig(core.KindSink, "kafka", []byte("brokers: [kafka1]\ntopic: 'flux.{{site}}'\nkey: user\ncompression: brotli\nsasl: {mechanism: GSSAPI}\ninflight_batches: 0\n"))
	_, err := kafka.New(nc)
	for _, want := range []string{
		`sinks.kafka.brokers: "kafka1" is not host:port`,
		`sinks.kafka.topic: unknown placeholder {{site}} (cluster, source, kind, event, queue, user)`,
		`sinks.kafka.key: unknown key "user" (job, event)`,
		`sinks.kafka.compression: unknown codec "brotli" (none, gzip, snappy, lz4, zstd)`,
		`sinks.kafka.sasl.mechanism: unknown mechanism "GSSAPI" (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512)`,
		`sinks.kafka.inflight_batches: 0 is out of range (1 to 64)`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}

// BenchmarkReplayAvroKafka measures the whole path: replay of the bulk
// journal -> avro (single-object) -> kafka sink (disk spool) -> a 3-broker
// kfake on loopback.
func BenchmarkReplayAvroKafka(b *testing.B) {
	for _, buffer := range []string{"disk", "memory"} {
		b.Run(buffer, func(b *testing.B) { benchReplayAvroKafka(b, buffer) })
	}
}

func benchReplayAvroKafka(b *testing.B, buffer string) {
	cluster := kafkatest.Start(b, kafkatest.Options{Brokers: 3, Topics: map[string]int{topic: 6}})
	yaml := fmt.Sprintf(`
sources:
  journal: {type: replay, path: %s/journal-bulk2000-live.jsonl.gz, user_lookup: none, checkpoint: false}
transforms:
  avro: {type: avro, inputs: [journal], encoding: single-object}
sinks:
  kafka:
    type: kafka
    inputs: [avro]
    brokers: [%s]
    topic: %s
    batch_max_bytes: 4MiB
    batch: {max_records: 5000}
    buffer: {type: %s}
`, testdata, strings.Join(cluster.Addrs(), ", "), topic, buffer)
	n := 0
	for b.Loop() {
		g := build(b, yaml)
		if err := core.NewPipeline(g, core.RunOptions{DataDir: b.TempDir(), Logger: quiet()}).Run(context.Background()); err != nil {
			b.Fatal(err)
		}
		n += 22000
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "records/s")
}

// An independent client (kcat, librdkafka) reads what the sink produced:
// keys, headers and JSON values as fluxstream wrote them.
func TestKcatReads(t *testing.T) {
	crosscheck.Need(t, "kcat (Debian's kcat)", crosscheck.Command("kcat"))
	cluster := kafkatest.Start(t, kafkatest.Options{Brokers: 1, Topics: map[string]int{topic: 1}})
	dir := t.TempDir()
	out := filepath.Join(dir, "records.jsonl")
	g := build(t, fmt.Sprintf(`
cluster: test
sources:
  journal: {type: replay, path: %s/journal-active-only-not-full.jsonl, user_lookup: none}
sinks:
  kafka: {type: kafka, inputs: [journal], brokers: [%s], topic: %s}
  json: {type: file, inputs: [journal], path: %s}
`, testdata, cluster.Addrs()[0], topic, out))
	if err := core.NewPipeline(g, core.RunOptions{DataDir: dir, Logger: quiet()}).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	res, err := exec.Command("kcat", "-C", "-b", cluster.Addrs()[0], "-t", topic, "-e", "-q",
		"-f", "%k\t%h\t%s\n").CombinedOutput()
	if err != nil {
		t.Fatalf("kcat: %v\n%s", err, res)
	}
	want, order := fileRecords(t, out)
	lines := strings.Split(strings.TrimSuffix(string(res), "\n"), "\n")
	if len(lines) != len(order) {
		t.Fatalf("kcat read %d records, the file has %d", len(lines), len(order))
	}
	for i, l := range lines {
		parts := strings.SplitN(l, "\t", 3)
		id := order[i]
		key, _, _ := strings.Cut(id, ":")
		if parts[0] != key || !strings.Contains(parts[1], "fluxstream-id="+id) || parts[2] != want[id] {
			t.Fatalf("kcat line %d: %q\nwant key %s, id %s, value %s", i, l, key, id, want[id])
		}
	}
}

// TLS: with the cluster's cert as ca_file the records are written; with
// the system roots or another CA the handshake fails and nothing is.
func TestTLS(t *testing.T) { forPeers(t, testTLS) }

func testTLS(t *testing.T, peer kafkatest.PeerKind) {
	topic := kafkatest.TopicName(t)
	c := peer.Start(t, kafkatest.PeerOptions{Topics: map[string]int{topic: 1}, TLS: true})
	base := fmt.Sprintf("brokers: [%s]\ntopic: %s\n", strings.Join(c.Addrs(), ", "), topic)
	recs := jobRecords(2, 3)
	if err := writeVia(t, base+"tls: {enabled: true, ca_file: "+c.CAFile()+"}\n", recs); err != nil {
		t.Fatalf("with the CA: %v", err)
	}
	if !hasIDs(t, c, topic, recs) {
		t.Fatal("Write over TLS succeeded but the records are not in Kafka")
	}
	otherCA := filepath.Join(t.TempDir(), "other-ca.pem")
	otherPEM, _ := kafkatest.SelfSigned(t)
	if err := os.WriteFile(otherCA, otherPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	for what, tls := range map[string]string{"system roots": "tls: {enabled: true}\n", "another CA": "tls: {enabled: true, ca_file: " + otherCA + "}\n"} {
		refused := []*core.Record{{Kind: core.KindEvent, ID: "7:refused:" + what, Cluster: "test", Event: &core.Event{Name: "refused", Timestamp: 1}, Job: &core.Job{ID: 7}}}
		err := writeVia(t, base+tls, refused)
		if err == nil || !strings.Contains(err.Error(), "TLS handshake failed (check tls:)") {
			t.Errorf("%s: %v", what, err)
		}
		if hasIDs(t, c, topic, refused) {
			t.Errorf("%s: the record is in Kafka", what)
		}
	}
}
