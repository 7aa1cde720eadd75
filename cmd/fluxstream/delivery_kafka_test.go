package main

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fluxstream/fluxstream/internal/kafkatest"
	"github.com/fluxstream/fluxstream/sinks/kafka"
	"github.com/fluxstream/fluxstream/sources/flux/fluxtest"
)

// kafkaIDs reads the topic: event record id -> count, and the job ids of
// the purge records (told apart by their kind header, not their id).
func kafkaIDs(t *testing.T, c kafkatest.Peer, topic string) (map[string]int, map[uint64]bool) {
	t.Helper()
	ids, purged := map[string]int{}, map[uint64]bool{}
	for _, m := range c.Records(t, topic) {
		if recordHeader(m, kafka.HeaderKind) == "purge" {
			id, _ := strconv.ParseUint(string(m.Key), 10, 64)
			purged[id] = true
			continue
		}
		ids[recordHeader(m, kafka.HeaderID)]++
	}
	return ids, purged
}

func recordHeader(m *kgo.Record, key string) string {
	for _, h := range m.Headers {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

// waitKafka polls the topic until it holds every event of want.
func waitKafka(r *deliveryRig, c kafkatest.Peer, topic string, want map[string]bool, d time.Duration) {
	r.t.Helper()
	deadline := time.Now().Add(d)
	for {
		got, _ := kafkaIDs(r.t, c, topic)
		var missing []string
		for id := range want {
			if got[id] == 0 {
				missing = append(missing, id)
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			sort.Strings(missing)
			r.t.Fatalf("Kafka still misses %d of %d events, e.g. %v; log of the last process:\n%s",
				len(missing), len(want), missing[:min(5, len(missing))], r.proc.log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Nothing committed is lost on the way to Kafka across kill -9 at random
// points: while Kafka is up, while the whole cluster is down (records
// wait in the sink's spool; a sink that acknowledged records before the
// brokers had them would lose them here), while the spool drains after
// the cluster is back, and around the purge. On kfake and on Apache
// Kafka.
func TestKill9NothingLostKafka(t *testing.T) {
	for _, p := range kafkatest.Peers {
		t.Run(p.Name, func(t *testing.T) { testKill9NothingLostKafka(t, p) })
	}
}

func testKill9NothingLostKafka(t *testing.T, peer kafkatest.PeerKind) {
	kill9Topic := kafkatest.TopicName(t)
	cluster := peer.Start(t, kafkatest.PeerOptions{Topics: map[string]int{kill9Topic: 3}, Own: true, SyncWrites: true})
	r := newDeliveryRig(t, fmt.Sprintf(`
  kafka:
    type: kafka
    inputs: [flux]
    brokers: [%s]
    topic: %s
    dial_timeout: 2s
    delivery_timeout: 500ms
    retry: {initial_backoff: 20ms, max_backoff: 200ms}
`, strings.Join(cluster.Addrs(), ", "), kill9Topic))
	purgeAt := r.in.PosAfterResponses(fluxtest.ScenarioPurgeAfter)
	outageFrom, outageTo := purgeAt/3, 2*purgeAt/3

	r.start()
	r.stepTo(outageFrom, 2) // Kafka up, two kills on the way
	waitKafka(r, cluster, kill9Topic, r.backlogEvents(outageFrom), 30*time.Second)

	cluster.Stop() // the whole cluster goes away (cleanly: it keeps its log)
	r.stepTo(outageTo, 2)
	r.randomKill(300 * time.Millisecond) // with the spool full of undelivered records
	cluster.Restart()
	r.randomKill(300 * time.Millisecond) // while the spool drains
	waitKafka(r, cluster, kill9Topic, r.backlogEvents(outageTo), 30*time.Second)

	r.stepTo(purgeAt, 1)
	// The jobs to be purged are in Kafka before Flux purges them.
	waitKafka(r, cluster, kill9Topic, r.backlogEvents(purgeAt), 30*time.Second)
	r.stepTo(purgeAt+1, 0) // the purge
	r.randomKill(100 * time.Millisecond)
	r.stepTo(r.in.Len(), 1)
	committed, all := r.expected()
	waitKafka(r, cluster, kill9Topic, committed, 30*time.Second)
	r.stop()

	got, purged := kafkaIDs(t, cluster, kill9Topic)
	dups, records := 0, 0
	for id, n := range got {
		records += n
		dups += n - 1
		if !all[id] {
			t.Errorf("Kafka holds %s, which the journal never had", id)
		}
	}
	for id := range committed {
		if got[id] == 0 {
			t.Errorf("Kafka lost %s", id)
		}
	}
	for _, id := range []uint64{349066756096, 382369529856, 389717950464, 398844755968, 412165865472, 421728878592, 438690643968, 429664501760} {
		if !purged[id] {
			t.Errorf("Kafka has no purge record for job %d", id)
		}
	}
	t.Logf("%s: %d committed events all present after %d kill -9 (one Kafka outage); %d event records in all, %d duplicates (same key and id), purge records for %d jobs",
		kill9Topic, len(committed), r.kills, records, dups, len(purged))
}
