package kafkatest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
)

// producerOpts make an idempotent acks=all client, as the kafka sink uses.
func producerOpts(topic string) []kgo.Opt {
	return []kgo.Opt{
		kgo.DefaultProduceTopic(topic),
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.RecordDeliveryTimeout(30 * time.Second), // a hang fails the test, not the test binary
	}
}

func producer(t *testing.T, c *Cluster, topic string, opts ...kgo.Opt) *kgo.Client {
	return c.Client(t, append(producerOpts(topic), opts...)...)
}

// producerAs logs in as u (or not at all, for nil) instead of ClientOpts'
// first user: kgo.SASL adds mechanisms, it does not replace them.
func producerAs(t *testing.T, c *Cluster, topic string, u *User, opts ...kgo.Opt) *kgo.Client {
	opts = append(append(producerOpts(topic), kgo.SeedBrokers(c.Addrs()...)), opts...)
	if u != nil {
		opts = append(opts, kgo.SASL(u.SASL()))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func produce(t *testing.T, cl *kgo.Client, from, to int) {
	t.Helper()
	var recs []*kgo.Record
	for i := from; i < to; i++ {
		recs = append(recs, &kgo.Record{Key: []byte(strconv.Itoa(i % 7)), Value: []byte(strconv.Itoa(i))})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, recs...).FirstErr(); err != nil {
		t.Fatalf("produce: %v", err)
	}
}

// checkExactly fails unless recs hold the values 0..n-1 once each, in
// produce order within each key.
func checkExactly(t *testing.T, recs []*kgo.Record, n int) {
	t.Helper()
	seen := make(map[int]int)
	last := make(map[string]int)
	for _, r := range recs {
		v, err := strconv.Atoi(string(r.Value))
		if err != nil {
			t.Fatalf("bad value %q", r.Value)
		}
		seen[v]++
		if prev, ok := last[string(r.Key)]; ok && v < prev {
			t.Errorf("key %s: %d after %d", r.Key, v, prev)
		}
		last[string(r.Key)] = v
	}
	var missing, dups []int
	for i := range n {
		switch seen[i] {
		case 0:
			missing = append(missing, i)
		case 1:
		default:
			dups = append(dups, i)
		}
	}
	if len(recs) != n || len(missing) > 0 || len(dups) > 0 {
		t.Fatalf("got %d records for %d values; missing %v; duplicated %v", len(recs), n, head(missing), head(dups))
	}
}

func head(xs []int) []int { return xs[:min(len(xs), 20)] }

func TestProduceConsume(t *testing.T) {
	c := Start(t, Options{Topics: map[string]int{"events": 3}})
	if got := len(c.Addrs()); got != 3 {
		t.Fatalf("%d brokers, want 3", got)
	}
	produce(t, producer(t, c, "events"), 0, 500)
	recs := c.Records(t, "events")
	checkExactly(t, recs, 500)

	// Replicas are metadata only, but a producer may read them.
	md, err := kadm.NewClient(c.Client(t)).Metadata(context.Background(), "events")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range md.Topics["events"].Partitions {
		if len(p.Replicas) != 3 {
			t.Errorf("partition %d: replicas %v, want 3 (kfake's default)", p.Partition, p.Replicas)
		}
	}
}

func TestReplicationAndUnknownTopic(t *testing.T) {
	c := Start(t, Options{Brokers: 2, Topics: map[string]int{"events": 2}, Replication: 1})
	md, err := kadm.NewClient(c.Client(t)).Metadata(context.Background(), "events")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range md.Topics["events"].Partitions {
		if len(p.Replicas) != 1 {
			t.Errorf("partition %d: replicas %v, want 1", p.Partition, p.Replicas)
		}
	}
	// No auto-creation: a typo in a topic name must not pass silently.
	cl := producer(t, c, "nope", kgo.UnknownTopicRetries(1))
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("x")}).FirstErr(); err == nil {
		t.Fatal("produce to a topic that was not created succeeded")
	}
}

// Remove a broker while records are in flight, keep producing, bring it
// back: every record lands exactly once.
func TestRemoveBrokerMidProduce(t *testing.T) {
	const n = 3000 // over the remove, while removed, after the add
	c := Start(t, Options{Topics: map[string]int{"events": 6}})
	cl := producer(t, c, "events", kgo.ProducerLinger(time.Millisecond))

	// A raw connection to broker 1 must break when it is removed.
	raw, err := net.Dial("tcp", c.Addrs()[1])
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()

	var sent, acked atomic.Int64
	var errMu sync.Mutex
	var errs []error
	added, done := make(chan struct{}), make(chan struct{})
	release := sync.OnceFunc(func() { close(added) })
	defer release() // never leave the producer blocked
	go func() {
		defer close(done)
		for i := range n {
			if i == 2*n/3 {
				<-added // the last third goes out after the broker is back
			}
			r := &kgo.Record{Key: []byte(strconv.Itoa(i % 7)), Value: []byte(strconv.Itoa(i))}
			cl.Produce(context.Background(), r, func(_ *kgo.Record, err error) {
				if err != nil {
					errMu.Lock()
					errs = append(errs, err)
					errMu.Unlock()
				}
				acked.Add(1)
			})
			sent.Add(1)
			if i%5 == 0 {
				time.Sleep(time.Millisecond) // spread the records over the remove and add
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := cl.Flush(ctx); err != nil {
			errMu.Lock()
			errs = append(errs, fmt.Errorf("flush: %w", err))
			errMu.Unlock()
		}
	}()
	waitAcked := func(min int64) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for acked.Load() < min {
			if time.Now().After(deadline) {
				t.Fatalf("stuck at %d acked records, waiting for %d", acked.Load(), min)
			}
			time.Sleep(time.Millisecond)
		}
	}

	waitAcked(500)
	c.RemoveBroker(1)
	t.Logf("broker 1 removed with %d records sent, %d acked", sent.Load(), acked.Load())

	raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := raw.Read(make([]byte, 1)); err == nil || isTimeout(err) {
		t.Errorf("open connection to the removed broker: read gave %v, want it closed", err)
	}
	if conn, err := net.DialTimeout("tcp", c.Addrs()[1], time.Second); err == nil {
		conn.Close()
		t.Errorf("removed broker still accepts connections")
	}
	md, err := kadm.NewClient(c.Client(t, kgo.SeedBrokers(c.Addrs()[0]))).Metadata(context.Background(), "events")
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range md.Topics["events"].Partitions {
		if p.Leader == 1 {
			t.Errorf("partition %d still led by the removed broker", p.Partition)
		}
	}

	waitAcked(2 * n / 3) // producing goes on without broker 1
	c.AddBroker(1)
	release()
	<-done
	if len(errs) > 0 {
		t.Fatalf("%d produce errors, first: %v", len(errs), errs[0])
	}
	checkExactly(t, c.Records(t, "events"), n)
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func TestSASL(t *testing.T) {
	users := []User{
		{ScramSHA256, "alice", "a-secret"},
		{Plain, "bob", "b-secret"},
		{ScramSHA512, "carol", "c-secret"},
	}
	c := Start(t, Options{Brokers: 1, Topics: map[string]int{"events": 1}, Users: users})
	for i, u := range users {
		t.Run(u.Mechanism, func(t *testing.T) {
			produce(t, producerAs(t, c, "events", &u), i, i+1)
		})
	}
	checkExactly(t, c.Records(t, "events"), len(users))

	// kfakebroker answers a wrong PLAIN password or an unknown user with
	// SASL_AUTHENTICATION_FAILED, as Kafka does; a wrong SCRAM password
	// only gets the connection closed (kfake's own answer).
	for _, tc := range []struct {
		u        User
		authFail bool
	}{
		{User{Plain, "bob", "wrong"}, true},
		{User{ScramSHA256, "mallory", "x"}, true},
		{User{ScramSHA512, "mallory", "x"}, true},
		{User{ScramSHA256, "alice", "wrong"}, false},
		{User{ScramSHA512, "carol", "wrong"}, false},
	} {
		t.Run("bad "+tc.u.Mechanism+" "+tc.u.Name, func(t *testing.T) {
			cl := producerAs(t, c, "events", &tc.u)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			err := cl.Ping(ctx)
			if err == nil || ctx.Err() != nil {
				t.Fatalf("ping: %v, want a prompt error", err)
			}
			if got := errors.Is(err, kerr.SaslAuthenticationFailed); got != tc.authFail {
				t.Fatalf("ping: %v; SASL_AUTHENTICATION_FAILED %v, want %v", err, got, tc.authFail)
			}
		})
	}
	t.Run("produce with a bad password", func(t *testing.T) {
		// Clients retry auth failures while producing, as against Kafka:
		// the error comes at the delivery timeout.
		cl := producerAs(t, c, "events", &User{Plain, "bob", "wrong"}, kgo.RecordDeliveryTimeout(2*time.Second))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("x")}, &kgo.Record{Value: []byte("y")}).FirstErr()
		if !errors.Is(err, kerr.SaslAuthenticationFailed) {
			t.Fatalf("produce: %v, want SASL_AUTHENTICATION_FAILED", err)
		}
	})
	t.Run("no SASL", func(t *testing.T) {
		cl := producerAs(t, c, "events", nil, kgo.RecordDeliveryTimeout(time.Second))
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err := cl.ProduceSync(ctx, &kgo.Record{Value: []byte("x")}).FirstErr()
		if err == nil || ctx.Err() != nil {
			t.Fatalf("produce without SASL: %v, want an error", err)
		}
	})
	checkExactly(t, c.Records(t, "events"), len(users))
}

func TestTLS(t *testing.T) {
	c := Start(t, Options{Brokers: 2, Topics: map[string]int{"events": 2}, TLS: true,
		Users: []User{{ScramSHA512, "alice", "secret"}}})
	if c.TLSConfig() == nil || c.CAFile() == "" {
		t.Fatal("no TLS config or CA file")
	}
	produce(t, producer(t, c, "events"), 0, 100)
	checkExactly(t, c.Records(t, "events"), 100)
}

// With DataDir, the topic and its records survive kill -9, and a producer
// keeps going across the crash.
func TestKillRestartDataDir(t *testing.T) {
	c := Start(t, Options{Topics: map[string]int{"events": 3}, DataDir: t.TempDir()})
	addrs := c.Addrs()
	// Leaders move on restart; kgo's default 5s metadata min age would
	// only slow the test down.
	cl := producer(t, c, "events", kgo.MetadataMinAge(250*time.Millisecond))
	produce(t, cl, 0, 200)
	c.Kill()
	c.Restart()
	if got := c.Addrs(); fmt.Sprint(got) != fmt.Sprint(addrs) {
		t.Fatalf("restarted on %v, want %v", got, addrs)
	}
	produce(t, cl, 200, 400)
	checkExactly(t, c.Records(t, "events"), 400)

	c.Stop()
	c.Restart()
	checkExactly(t, c.Records(t, "events"), 400)
}

func TestExitsWhenStdinCloses(t *testing.T) {
	c := Start(t, Options{Brokers: 1})
	addr := c.Addrs()[0]
	p := c.proc
	p.stdin.Close()
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Fatal("kfakebroker still running 10s after its stdin closed")
	}
	if !p.cmd.ProcessState.Success() {
		t.Errorf("exit: %v", p.cmd.ProcessState)
	}
	if conn, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		conn.Close()
		t.Error("port still open after exit")
	}
}
