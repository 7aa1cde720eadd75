package kafka_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/core/coretest"
	"github.com/fluxstream/fluxstream/internal/kafkatest"
	"github.com/fluxstream/fluxstream/internal/srtest"
	"github.com/fluxstream/fluxstream/sinks/file"
	kafkasink "github.com/fluxstream/fluxstream/sinks/kafka"
	kafkasource "github.com/fluxstream/fluxstream/sources/kafka"
	"github.com/fluxstream/fluxstream/sources/replay"
	"github.com/fluxstream/fluxstream/transforms/avro"
)

const testdata = "../../testdata/flux"

func registry() *core.Registry {
	r := core.NewRegistry()
	replay.Register(r)
	avro.Register(r)
	kafkasink.Register(r)
	kafkasource.Register(r)
	file.Register(r)
	return r
}

// lines reads a file sink's output: record id -> JSON line, and the ids in
// file order. A missing file is empty.
func lines(t testing.TB, path string) (map[string]string, []string) {
	t.Helper()
	out := map[string]string{}
	var order []string
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		return out, nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 16<<20)
	for sc.Scan() {
		var r struct{ ID string }
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			continue // a line being written
		}
		out[r.ID] = sc.Text()
		order = append(order, r.ID)
	}
	return out, order
}

// produce runs journal -> [avro] -> kafka sink, and the same records into
// a file; it returns the file's records.
func produce(t *testing.T, a *kafkatest.Apache, topic, journal, encoding, regURL string) (map[string]string, []string) {
	t.Helper()
	dir := t.TempDir()
	want := filepath.Join(dir, "want.jsonl")
	input, transforms := "journal", ""
	switch encoding {
	case "confluent":
		input = "avro"
		transforms = fmt.Sprintf("transforms:\n  avro: {type: avro, inputs: [journal], registry: {urls: [%s], subject: %s-value}}\n", regURL, topic)
	case "single-object":
		input = "avro"
		transforms = "transforms:\n  avro: {type: avro, inputs: [journal], encoding: single-object}\n"
	}
	g := coretest.Build(t, registry(), fmt.Sprintf(`
cluster: test
sources:
  journal: {type: replay, path: %s/%s, user_lookup: none}
%ssinks:
  kafka: {type: kafka, inputs: [%s], brokers: [%s], topic: %s}
  want: {type: file, inputs: [journal], path: %s}
`, testdata, journal, transforms, input, strings.Join(a.Addrs(), ", "), topic, want))
	if err := core.NewPipeline(g, core.RunOptions{DataDir: dir, Logger: coretest.Quiet()}).Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	return lines(t, want)
}

// consume runs kafka source -> file until the file holds n records (or
// until done says so), then stops the pipeline cleanly.
func consume(t *testing.T, a kafkatest.Peer, topic, group, extra string, done func(got map[string]string) bool) (map[string]string, []string) {
	t.Helper()
	dir := t.TempDir()
	out := filepath.Join(dir, "got.jsonl")
	g := coretest.Build(t, registry(), fmt.Sprintf(`
sources:
  kafka:
    type: kafka
    brokers: [%s]
    topics: [%s]
    group: %s
    session_timeout: 6s
    heartbeat_interval: 500ms
    commit_interval: 50ms
%s
sinks:
  got: {type: file, inputs: [kafka], path: %s}
`, strings.Join(a.Addrs(), ", "), topic, group, extra, out))
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- core.NewPipeline(g, core.RunOptions{DataDir: dir, Logger: coretest.Quiet(), ShutdownTimeout: 10 * time.Second}).Run(ctx)
	}()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		got, _ := lines(t, out)
		if done(got) {
			break
		}
		select {
		case err := <-errc:
			cancel()
			t.Fatalf("pipeline ended early: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			cancel()
			t.Fatalf("after 2 minutes the file has %d records", len(got))
		}
		time.Sleep(20 * time.Millisecond) // polling the file's state
	}
	cancel()
	if err := <-errc; err != nil {
		t.Fatalf("pipeline: %v", err)
	}
	return lines(t, out)
}

// committedToEnd waits until group's committed offsets equal topic's end
// offsets on every partition.
func committedToEnd(t *testing.T, a *kafkatest.Apache, topic, group string) {
	t.Helper()
	adm := a.Admin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err != nil {
		t.Fatal(err)
	}
	for {
		com, err := adm.FetchOffsets(ctx, group)
		ok := err == nil
		ends.Each(func(e kadm.ListedOffset) {
			c, found := com.Lookup(topic, e.Partition)
			ok = ok && found && c.At == e.Offset
		})
		if ok {
			return
		}
		if ctx.Err() != nil {
			t.Fatalf("committed %v, end offsets %v", com, ends)
		}
		time.Sleep(20 * time.Millisecond) // polling the group's state
	}
}

// Records produced by the kafka sink (JSON, Avro through the registry,
// Avro single-object) come back from the kafka source as the very records
// the replay source emitted, byte for byte in their JSON form; the group
// then has every offset committed.
func TestRoundTrip(t *testing.T) {
	a := kafkatest.SharedApache(t)
	reg := srtest.New()
	defer reg.Close()
	for _, tc := range []struct{ encoding, journal string }{
		{"json", "journal-bulk2000-live.jsonl.gz"},
		{"confluent", "journal-scenario-live-full.jsonl"},
		{"single-object", "journal-scenario-live-full.jsonl"},
	} {
		t.Run(tc.encoding, func(t *testing.T) {
			topic := kafkatest.TopicName(t)
			a.CreateTopic(t, topic, 6, nil)
			want, order := produce(t, a, topic, tc.journal, tc.encoding, reg.URL())
			if len(want) < 10 {
				t.Fatalf("only %d records produced", len(want))
			}
			group := topic + "-g"
			extra := ""
			if tc.encoding == "confluent" {
				extra = fmt.Sprintf("    registry: {urls: [%s]}", reg.URL())
			}
			before := reg.Requests.Load()
			got, gotOrder := consume(t, a, topic, group, extra, func(got map[string]string) bool { return len(got) >= len(want) })
			if len(got) != len(want) || len(gotOrder) != len(order) {
				t.Fatalf("got %d records (%d lines), want %d", len(got), len(gotOrder), len(want))
			}
			for id, line := range want {
				if got[id] != line {
					t.Fatalf("%s:\n got %s\nwant %s", id, got[id], line)
				}
			}
			checkJobOrder(t, order, gotOrder)
			if tc.encoding == "confluent" {
				if n := reg.Requests.Load() - before; n != 1 {
					t.Errorf("%d registry requests for one schema id, want 1 (cached by id)", n)
				}
			}
			committedToEnd(t, a, topic, group)
		})
	}
}

// checkJobOrder asserts each job's events in got keep their order in want.
func checkJobOrder(t *testing.T, want, got []string) {
	t.Helper()
	pos := map[string]int{}
	for i, id := range want {
		pos[id] = i
	}
	last := map[string]int{}
	for _, id := range got {
		job, _, _ := strings.Cut(id, ":")
		if p, ok := last[job]; ok && pos[id] < p {
			t.Fatalf("job %s: %s out of order", job, id)
		}
		last[job] = pos[id]
	}
}

// Bad messages become invalid records naming topic, partition and offset;
// the good record behind them comes through, and the partition's offsets
// are all committed: nothing is stuck.
func TestBadMessages(t *testing.T) {
	a := kafkatest.SharedApache(t)
	reg := srtest.New()
	defer reg.Close()
	topic := kafkatest.TopicName(t)
	a.CreateTopic(t, topic, 1, nil)
	good := `{"kind":"event","id":"1:submit:1.5","cluster":"c","event":{"timestamp":1.5,"name":"submit"},"job":{"id":1,"jobid":"f1","userid":5,"urgency":16}}`
	bad := []struct{ value, err string }{
		{"not json at all", "unknown encoding (magic byte 0x6e"},
		{`{"foo": 1}`, "not a fluxstream record"},
		{`{"kind": 7}`, "not a fluxstream JSON record"},
		{"\x00\x00\x00\x27\x0fabc", "unknown schema id 9999"},
		{"\x07\x01\x02", "unknown encoding (magic byte 0x07"},
		{"\xc3\x01\x01\x02\x03\x04\x05\x06\x07\x08\x00", "schema fingerprint 0102030405060708 is not a fluxstream record schema"},
		{"", "magic byte none (empty value)"},
	}
	cl := a.Client(t)
	ctx := context.Background()
	var msgs []*kgo.Record
	for _, b := range bad {
		msgs = append(msgs, &kgo.Record{Topic: topic, Value: []byte(b.value)})
	}
	msgs = append(msgs, &kgo.Record{Topic: topic, Key: []byte("1"), Value: []byte(good)})
	if err := cl.ProduceSync(ctx, msgs...).FirstErr(); err != nil {
		t.Fatal(err)
	}
	group := topic + "-g"
	got, order := consume(t, a, topic, group, fmt.Sprintf("    registry: {urls: [%s]}", reg.URL()),
		func(got map[string]string) bool { return len(got) >= len(msgs) })
	if len(order) != len(msgs) {
		t.Fatalf("%d records, want %d: %v", len(order), len(msgs), order)
	}
	for i, b := range bad {
		var r core.Record
		if err := json.Unmarshal([]byte(got[order[i]]), &r); err != nil {
			t.Fatal(err)
		}
		where := fmt.Sprintf("kafka topic %s partition 0 offset %d", topic, i)
		if r.Kind != core.KindInvalid || r.Invalid == nil || r.Invalid.Where != where || !strings.Contains(r.Invalid.Error, b.err) {
			t.Errorf("message %d (%q): %s\nwant invalid at %q with error %q", i, b.value, got[order[i]], where, b.err)
		}
	}
	if got["1:submit:1.5"] == "" {
		t.Fatalf("the good record is missing: %v", order)
	}
	committedToEnd(t, a, topic, group)
}
