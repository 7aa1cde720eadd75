package kafkatest_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fluxstream/fluxstream/internal/kafkatest"
	"github.com/fluxstream/fluxstream/internal/kafkatest/apache"
)

// produceN produces n records keyed k<i%7> with value v<i> and waits.
func produceN(t *testing.T, cl *kgo.Client, topic string, from, n int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var recs []*kgo.Record
	for i := from; i < from+n; i++ {
		recs = append(recs, &kgo.Record{Topic: topic, Key: fmt.Appendf(nil, "k%d", i%7), Value: fmt.Appendf(nil, "v%d", i)})
	}
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

// checkValues asserts recs hold v<0>..v<n-1> once each, in order per key.
func checkValues(t *testing.T, recs []*kgo.Record, n int) {
	t.Helper()
	seen := map[string]bool{}
	last := map[string]int{}
	for _, r := range recs {
		v := string(r.Value)
		if seen[v] {
			t.Errorf("%s twice", v)
		}
		seen[v] = true
		var i int
		fmt.Sscanf(v, "v%d", &i)
		if p, ok := last[string(r.Key)]; ok && p > i {
			t.Errorf("key %s: v%d after v%d", r.Key, i, p)
		}
		last[string(r.Key)] = i
		if want := fmt.Sprintf("k%d", i%7); string(r.Key) != want {
			t.Errorf("%s has key %s, want %s", v, r.Key, want)
		}
	}
	for i := 0; i < n; i++ {
		if !seen[fmt.Sprintf("v%d", i)] {
			t.Errorf("v%d missing", i)
		}
	}
	if len(recs) != n {
		t.Errorf("%d records, want %d", len(recs), n)
	}
}

func TestApacheShared(t *testing.T) {
	a := kafkatest.SharedApache(t)
	topic := kafkatest.TopicName(t)
	a.CreateTopic(t, topic, 3, nil)
	produceN(t, a.Client(t), topic, 0, 500)
	checkValues(t, a.Records(t, topic), 500)

	// A second join from this process reuses the membership.
	b := kafkatest.SharedApache(t)
	if b.Addrs()[0] != a.Addrs()[0] {
		t.Fatalf("second SharedApache on %v, first on %v", b.Addrs(), a.Addrs())
	}
	dir, _ := kafkatest.SharedDir()
	if _, err := os.Stat(filepath.Join(dir, "state.json")); err != nil {
		t.Fatalf("no shared state: %v", err)
	}
}

func TestApacheThreeNodes(t *testing.T) {
	// On demand only: on a loaded 2-core machine one broker did not
	// show in the metadata within 5 minutes in both runs watched (once
	// after its kill -9 restart although its log said RUNNING, once at
	// the first start after a controller change); README "Three nodes
	// stay opt-in". Cost is not the reason (31 CPU-s to start three).
	if os.Getenv("FLUXSTREAM_KAFKA_3NODES") == "" {
		t.Skip("three-node cluster: set FLUXSTREAM_KAFKA_3NODES=1 (three JVMs; a broker may not register on a loaded machine, see README)")
	}
	a := kafkatest.StartApache(t, kafkatest.ApacheOptions{Nodes: 3, Topics: map[string]int{"events": 6}, ReadyTimeout: 5 * time.Minute})
	cl := a.Client(t, kgo.RequiredAcks(kgo.AllISRAcks()))
	produceN(t, cl, "events", 0, 300)

	// Every partition is replicated to all three nodes.
	md, err := a.Admin(t).Metadata(context.Background(), "events")
	if err != nil {
		t.Fatal(err)
	}
	if n := len(md.Brokers); n != 3 {
		t.Fatalf("%d brokers, want 3", n)
	}
	for _, p := range md.Topics["events"].Partitions {
		if len(p.Replicas) != 3 {
			t.Fatalf("partition %d: replicas %v, want 3", p.Partition, p.Replicas)
		}
	}

	// A node killed with SIGKILL by pid: the others take over; it comes
	// back over its data.
	pid := a.Cluster().Nodes()[1].Pid()
	a.KillNode(1)
	if err := syscall.Kill(pid, 0); err == nil {
		t.Fatalf("node 2 (pid %d) still alive after KillNode", pid)
	}
	produceN(t, cl, "events", 300, 300)
	a.StartNode(1)
	produceN(t, cl, "events", 600, 100)
	checkValues(t, a.Records(t, "events"), 700)

	pids := a.Cluster().Pids()
	a.Cluster().Stop(30 * time.Second)
	for _, pid := range pids {
		if syscall.Kill(pid, 0) == nil {
			t.Errorf("pid %d alive after Stop", pid)
		}
	}
}

func TestApacheLibCached(t *testing.T) {
	kafkatest.NeedApache(t)
	lib, err := apache.Lib()
	if err != nil {
		t.Fatal(err)
	}
	jar := filepath.Join(lib, "kafka_2.13-"+apache.Version+".jar")
	if _, err := os.Stat(jar); err != nil {
		t.Fatalf("broker jar missing from the cache: %v", err)
	}
	start := time.Now()
	if _, err := apache.Lib(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("a warm Lib took %v", d)
	}
}

// The shared cluster's SCRAM and TLS listeners: users created through the
// admin API log in with their own mechanism only; TLS clients trusting
// the keeper's cert get through, others fail the handshake.
func TestApacheSharedSCRAMAndTLS(t *testing.T) {
	a := kafkatest.SharedApache(t)
	topic := kafkatest.TopicName(t)
	a.CreateTopic(t, topic, 1, nil)
	u256 := kafkatest.User{Mechanism: kafkatest.ScramSHA256, Name: "u256-" + topic, Password: "pw-256"}
	u512 := kafkatest.User{Mechanism: kafkatest.ScramSHA512, Name: "u512-" + topic, Password: "pw-512"}
	s := a.WithSCRAM(t, u256, u512)
	if s.Addrs()[0] == a.Addrs()[0] {
		t.Fatalf("SCRAM listener on the plain one's address %v", s.Addrs())
	}
	produceN(t, s.Client(t), topic, 0, 10)
	cl512, err := kgo.NewClient(kgo.SeedBrokers(s.Addrs()...), kgo.SASL(u512.SASL()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl512.Close()
	produceN(t, cl512, topic, 10, 10)
	checkValues(t, a.Records(t, topic), 20)

	ping := func(opts ...kgo.Opt) error {
		cl, err := kgo.NewClient(opts...)
		if err != nil {
			t.Fatal(err)
		}
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return cl.Ping(ctx)
	}
	wrongMech := kafkatest.User{Mechanism: kafkatest.ScramSHA512, Name: u256.Name, Password: u256.Password}
	wrongPass := kafkatest.User{Mechanism: kafkatest.ScramSHA256, Name: u256.Name, Password: "nope"}
	for what, u := range map[string]kafkatest.User{"a user of SCRAM-SHA-256 with SCRAM-SHA-512": wrongMech, "a wrong password": wrongPass} {
		if err := ping(kgo.SeedBrokers(s.Addrs()...), kgo.SASL(u.SASL())); err == nil || !strings.Contains(err.Error(), "SASL_AUTHENTICATION_FAILED") {
			t.Errorf("%s: %v, want SASL_AUTHENTICATION_FAILED", what, err)
		}
	}
	if err := ping(kgo.SeedBrokers(s.Addrs()...)); err == nil {
		t.Error("the SCRAM listener let a client in without SASL")
	}

	tl := a.WithTLS(t)
	if err := ping(tl.ClientOpts()...); err != nil {
		t.Fatalf("TLS with the keeper's cert: %v", err)
	}
	produceN(t, tl.Client(t), topic, 20, 5)
	checkValues(t, tl.Records(t, topic), 25)
	var certErr *tls.CertificateVerificationError
	if err := ping(kgo.SeedBrokers(tl.Addrs()...), kgo.DialTLSConfig(&tls.Config{MinVersion: tls.VersionTLS12})); !errors.As(err, &certErr) {
		t.Errorf("TLS without trusting the cert: %v, want a certificate verification error", err)
	}
}
