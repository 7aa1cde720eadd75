package kafkatest

import (
	"testing"

	"github.com/twmb/franz-go/pkg/kgo"
)

// Peer is a Kafka cluster a test runs against: kfake (Start) or Apache
// Kafka (StartApache, SharedApache). Tests that must hold on both take
// their body once and run it for each of Peers.
type Peer interface {
	Addrs() []string                                  // the client listeners
	ClientOpts() []kgo.Opt                            // seeds, TLS, SASL as the first user
	Client(t testing.TB, opts ...kgo.Opt) *kgo.Client // ClientOpts, then opts
	Records(t testing.TB, topic string) []*kgo.Record // from the start to the end offsets as of the call
	CAFile() string                                   // PEM of the cluster's cert, "" without TLS
	Pids() []int                                      // the broker processes (for their CPU time in benchmarks)
	// Stop takes the whole cluster down, keeping its data; Restart brings
	// it back on the same addresses. Only on a cluster started with
	// PeerOptions.Own.
	Stop()
	Restart()
}

var (
	_ Peer = (*Cluster)(nil)
	_ Peer = (*Apache)(nil)
)

// PeerOptions says what a test needs of its peer.
type PeerOptions struct {
	Topics map[string]int // name -> partitions, created before the peer is returned
	// Users enables SASL on the client listener, logged in as the first.
	// On the shared Apache cluster only SCRAM users (created through the
	// admin API), unless Own.
	Users []User
	TLS   bool // TLS on the client listener (not with Users on the shared cluster)
	// Own is a cluster of the test's own, which it may Stop and Restart:
	// kfake with a data dir, a private one-node Apache Kafka (10-15 s to
	// start). Without it Apache tests share one node (SharedApache), so
	// topic names must be the test's own (TopicName).
	Own bool
	// For kfake: brokers (default 3) and fsync on every write.
	Brokers    int
	SyncWrites bool
}

// PeerKind starts one kind of peer.
type PeerKind struct {
	Name  string // kfake, apache
	Start func(t testing.TB, o PeerOptions) Peer
}

// Peers are the kinds of Kafka a shared test body runs against: kfake
// (fast, no Java) and Apache Kafka (skipped without Java and Maven,
// failing in CI).
var Peers = []PeerKind{
	{Name: "kfake", Start: func(t testing.TB, o PeerOptions) Peer {
		t.Helper()
		opts := Options{Brokers: o.Brokers, Topics: o.Topics, Users: o.Users, TLS: o.TLS, SyncWrites: o.SyncWrites}
		if o.Own {
			opts.DataDir = t.TempDir()
		}
		return Start(t, opts)
	}},
	{Name: "apache", Start: func(t testing.TB, o PeerOptions) Peer {
		t.Helper()
		if o.Own {
			return StartApache(t, ApacheOptions{Topics: o.Topics, Users: o.Users, TLS: o.TLS})
		}
		a := SharedApache(t)
		switch {
		case len(o.Users) > 0 && o.TLS:
			t.Fatalf("kafkatest: the shared Apache cluster has no SASL_SSL listener; take Own")
		case len(o.Users) > 0:
			a = a.WithSCRAM(t, o.Users...)
		case o.TLS:
			a = a.WithTLS(t)
		}
		for name, parts := range o.Topics {
			a.CreateTopic(t, name, parts, nil)
		}
		return a
	}},
}
