package kafka_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/internal/kafkatest"
)

// The source reaches brokers over TLS (the cluster's cert as ca_file) and
// logs in with SASL SCRAM-SHA-256 and -512, on kfake and on Apache Kafka:
// the records on the topic come back, every one.
func TestTLSAndSCRAM(t *testing.T) {
	for _, peer := range kafkatest.Peers {
		t.Run(peer.Name, func(t *testing.T) {
			t.Run("tls", func(t *testing.T) {
				topic := kafkatest.TopicName(t)
				c := peer.Start(t, kafkatest.PeerOptions{Topics: map[string]int{topic: 2}, TLS: true})
				consumeSecured(t, c, topic, "    tls: {enabled: true, ca_file: "+c.CAFile()+"}")
			})
			for _, mech := range []string{kafkatest.ScramSHA256, kafkatest.ScramSHA512} {
				t.Run(mech, func(t *testing.T) {
					topic := kafkatest.TopicName(t)
					u := kafkatest.User{Mechanism: mech, Name: "fs-" + topic, Password: "pw-" + mech}
					c := peer.Start(t, kafkatest.PeerOptions{Topics: map[string]int{topic: 2}, Users: []kafkatest.User{u}})
					consumeSecured(t, c, topic, fmt.Sprintf("    sasl: {mechanism: %s, username: %s, password: %s}", mech, u.Name, u.Password))
				})
			}
		})
	}
}

// consumeSecured produces records to topic with the peer's own client and
// reads them back through the source configured with extra.
func consumeSecured(t *testing.T, c kafkatest.Peer, topic, extra string) {
	t.Helper()
	cl := c.Client(t, kgo.DefaultProduceTopic(topic))
	want := map[string]bool{}
	for i := range 20 {
		r := &core.Record{Kind: core.KindEvent, ID: core.EventID(uint64(100+i%4), "ev", float64(i)), Cluster: "test",
			Event: &core.Event{Name: "ev", Timestamp: float64(i)}, Job: &core.Job{ID: uint64(100 + i%4)}}
		js, err := r.JSON()
		if err != nil {
			t.Fatal(err)
		}
		if err := cl.ProduceSync(context.Background(), &kgo.Record{Key: []byte(r.Key()), Value: js}).FirstErr(); err != nil {
			t.Fatal(err)
		}
		want[r.ID] = true
	}
	got, _ := consume(t, c, topic, topic+"-g", extra, func(got map[string]string) bool { return len(got) >= len(want) })
	if len(got) != len(want) {
		t.Fatalf("got %d records, want %d", len(got), len(want))
	}
	for id := range want {
		if got[id] == "" {
			t.Fatalf("%s did not come back", id)
		}
	}
}
