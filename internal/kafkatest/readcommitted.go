package kafkatest

import (
	"context"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fluxstream/fluxstream/internal/crosscheck"
)

// ReadCommitted reads topic as a read_committed consumer, from the start
// to the end offsets it has when called, and returns its data records.
// Commit markers are kept while reading, so the read knows it got to the
// end; a transaction still open holds it back until the 60 s limit.
func ReadCommitted(t testing.TB, addrs []string, topic string) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	adm, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		t.Fatal(err)
	}
	defer adm.Close()
	end, start := endOffsets(ctx, t, kadm.NewClient(adm), topic)
	if len(end) == 0 {
		return nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...), kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: start}),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()), kgo.KeepControlRecords())
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	next := map[int32]int64{}
	var recs []*kgo.Record
	for done := false; !done; {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("read %s: got to %v of %v: %v", topic, next, end, ctx.Err())
		}
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset >= end[r.Partition] {
				return
			}
			next[r.Partition] = r.Offset + 1
			if !r.Attrs.IsControl() {
				recs = append(recs, r)
			}
		})
		done = true
		for p, e := range end {
			done = done && next[p] >= e
		}
	}
	return recs
}

// KcatCommitted is ReadCommitted by an independent client, librdkafka
// (kcat, read_committed): how often each value of header occurs in topic.
// Without kcat the test skips, or fails in CI (crosscheck.Need).
func KcatCommitted(t testing.TB, addr, topic, header string) map[string]int {
	t.Helper()
	crosscheck.Need(t, "kcat (Debian's kcat)", crosscheck.Command("kcat"))
	out, err := exec.Command("kcat", "-C", "-b", addr, "-t", topic, "-e", "-q", "-X", "isolation.level=read_committed",
		"-f", "%h\n").CombinedOutput()
	if err != nil {
		t.Fatalf("kcat: %v\n%s", err, out)
	}
	counts := map[string]int{}
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		for _, h := range strings.Split(l, ",") {
			if v, ok := strings.CutPrefix(h, header+"="); ok {
				counts[v]++
			}
		}
	}
	return counts
}
