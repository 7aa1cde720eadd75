package kafkatest

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fluxstream/fluxstream/internal/crosscheck"
	"github.com/fluxstream/fluxstream/internal/kafkatest/apache"
)

// Apache is a real Apache Kafka cluster (package apache): one the test
// started (StartApache) or the one test binaries share (SharedApache).
type Apache struct {
	t        testing.TB
	cluster  *apache.Cluster // nil when shared
	addrs    []string
	internal []string
	users    []User
	caPEM    []byte
	caFile   string
	state    *apache.SharedState // the shared cluster's, nil for one started here
}

// ApacheOptions configures StartApache.
type ApacheOptions struct {
	Nodes  int            // 1 (default) or 3, each controller and broker
	Topics map[string]int // name -> partitions, created before StartApache returns
	// Users enables SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512) on the
	// client listener; Client logs in as the first.
	Users []User
	TLS   bool // serve the client listener with a throwaway cert for 127.0.0.1
	// ReadyTimeout bounds each wait for the brokers to register (default
	// 5 min: a failure bound for a loaded machine, where one node has
	// taken 2+ minutes to start at load average 40 on 2 cores).
	ReadyTimeout time.Duration
}

// NeedApache skips t where Java or Maven is missing (fails it in CI).
func NeedApache(t testing.TB) {
	t.Helper()
	crosscheck.Need(t, "Java 17+ and Maven (Apache Kafka "+apache.Version+" as a test peer)", apache.Missing)
}

// StartApache starts a cluster of its own for t, stopped (by pid) when t
// ends. Tests that only produce and consume should take SharedApache: a
// start costs 10-15 s of JVM time on 2 cores.
func StartApache(t testing.TB, opts ApacheOptions) *Apache {
	t.Helper()
	NeedApache(t)
	a := &Apache{t: t, users: opts.Users}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 5 * time.Minute
	}
	ao := apache.Options{Nodes: opts.Nodes, Dir: filepath.Join(t.TempDir(), "kafka"), ReadyTimeout: opts.ReadyTimeout}
	for _, u := range opts.Users {
		ao.Users = append(ao.Users, apache.User{Mechanism: u.Mechanism, Name: u.Name, Password: u.Password})
	}
	if opts.TLS {
		dir := t.TempDir()
		certPEM, keyPEM := selfSigned(t)
		ao.CertFile, ao.KeyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
		if err := os.WriteFile(ao.CertFile, certPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(ao.KeyFile, keyPEM, 0o600); err != nil {
			t.Fatal(err)
		}
		a.caPEM = certPEM
	}
	start := time.Now()
	c, err := apache.Launch(context.Background(), ao)
	if err != nil {
		t.Fatalf("kafkatest: Apache Kafka: %v", err)
	}
	t.Logf("kafkatest: Apache Kafka %s, %d node(s), up in %v (JVM CPU %v, load average %.1f)", apache.Version, len(c.Nodes()),
		time.Since(start).Round(time.Millisecond), PeersCPU(c.Pids()).Round(10*time.Millisecond), LoadAvg())
	a.cluster = c
	a.addrs, a.internal = c.Addrs(), c.InternalAddrs()
	t.Cleanup(func() {
		if t.Failed() {
			for i := range c.Nodes() {
				t.Logf("kafka node %d log:\n%s", i+1, tail(c.NodeLog(i), 8000))
			}
		}
		c.Stop(15 * time.Second)
	})
	for name, parts := range opts.Topics {
		a.CreateTopic(t, name, parts, nil)
	}
	return a
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// shared is this process's membership of the shared cluster.
var shared struct {
	mu       sync.Mutex
	state    *apache.SharedState
	err      error
	unlockFn func() // the users.lock held shared while this process lives
}

// EnvSharedDir overrides the directory of the shared cluster.
const EnvSharedDir = "FLUXSTREAM_KAFKA_SHARED_DIR"

// SharedDir is where the shared cluster keeps its locks, state and data.
func SharedDir() (string, error) {
	if d := os.Getenv(EnvSharedDir); d != "" {
		return d, nil
	}
	home, err := apache.Home()
	if err != nil {
		return "", err
	}
	// sharedLayout changes with what the keeper serves (listeners, state),
	// so a keeper of an older layout, still up for its users, is left alone.
	const sharedLayout = "v2"
	return filepath.Join(os.TempDir(), fmt.Sprintf("fluxstream-kafka-shared-%d-%s-%s", os.Getuid(), filepath.Base(home), sharedLayout)), nil
}

// SharedApache returns the one-node cluster that test binaries share: the
// first to ask starts it (through cmd/kafkakeeper, in its own session),
// later ones, from any package, join it, and the keeper stops it once no
// test binary has used it for 20 s. Tests must not stop or kill it:
// use their own topics (TopicName) and groups.
func SharedApache(t testing.TB) *Apache {
	t.Helper()
	NeedApache(t)
	shared.mu.Lock()
	defer shared.mu.Unlock()
	if shared.state == nil && shared.err == nil {
		shared.state, shared.err = joinShared()
	}
	if shared.err != nil {
		t.Fatalf("kafkatest: shared Apache Kafka: %v", shared.err)
	}
	return &Apache{t: t, addrs: shared.state.Addrs, internal: shared.state.InternalAddrs, state: shared.state}
}

// WithSCRAM is the shared cluster's SCRAM listener (SASL_PLAINTEXT,
// SCRAM-SHA-256 and -512), logged in as the first of users: each user is
// created (or its password set) for its mechanism through the admin API,
// and WithSCRAM returns once every one can log in.
func (a *Apache) WithSCRAM(t testing.TB, users ...User) *Apache {
	t.Helper()
	if a.state == nil || len(a.state.ScramAddrs) == 0 {
		t.Fatalf("kafkatest: WithSCRAM is for the shared cluster (StartApache takes Users)")
	}
	var ups []kadm.UpsertSCRAM
	for _, u := range users {
		var m kadm.ScramMechanism
		switch u.Mechanism {
		case ScramSHA256:
			m = kadm.ScramSha256
		case ScramSHA512:
			m = kadm.ScramSha512
		default:
			t.Fatalf("kafkatest: the shared cluster has no %s users (SCRAM only; StartApache for PLAIN)", u.Mechanism)
		}
		ups = append(ups, kadm.UpsertSCRAM{User: u.Name, Mechanism: m, Iterations: 4096, Password: u.Password})
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	res, err := a.Admin(t).AlterUserSCRAMs(ctx, nil, ups)
	if err == nil {
		err = res.Error()
	}
	if err != nil {
		t.Fatalf("kafkatest: create SCRAM users: %v", err)
	}
	v := &Apache{t: t, addrs: a.state.ScramAddrs, internal: a.internal, users: users, state: a.state}
	// The credentials reach the broker through the metadata log: poll
	// until each logs in.
	for _, u := range users {
		for {
			cl, err := kgo.NewClient(kgo.SeedBrokers(v.addrs...), kgo.SASL(u.SASL()))
			if err != nil {
				t.Fatal(err)
			}
			pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
			err = cl.Ping(pctx)
			pcancel()
			cl.Close()
			if err == nil {
				break
			}
			if ctx.Err() != nil {
				t.Fatalf("kafkatest: SCRAM user %s (%s) cannot log in: %v", u.Name, u.Mechanism, err)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return v
}

// WithTLS is the shared cluster's TLS listener (SSL, a throwaway cert the
// keeper made for 127.0.0.1; TLSConfig and CAFile trust it).
func (a *Apache) WithTLS(t testing.TB) *Apache {
	t.Helper()
	if a.state == nil || len(a.state.TLSAddrs) == 0 {
		t.Fatalf("kafkatest: WithTLS is for the shared cluster (StartApache takes TLS)")
	}
	return &Apache{t: t, addrs: a.state.TLSAddrs, internal: a.internal, caPEM: []byte(a.state.CAPEM), state: a.state}
}

func joinShared() (*apache.SharedState, error) {
	dir, err := SharedDir()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	unlockStart, err := apache.Flock(filepath.Join(dir, "start.lock"), true)
	if err != nil {
		return nil, err
	}
	defer unlockStart()
	st, err := readShared(dir)
	if err != nil || !sharedAlive(st) {
		if st, err = startKeeper(dir); err != nil {
			return nil, err
		}
	}
	// Held until this process ends: the keeper sees us as a user.
	unlock, err := apache.Flock(filepath.Join(dir, "users.lock"), false)
	if err != nil {
		return nil, err
	}
	shared.unlockFn = unlock
	return st, nil
}

func readShared(dir string) (*apache.SharedState, error) {
	b, err := os.ReadFile(filepath.Join(dir, "state.json"))
	if err != nil {
		return nil, err
	}
	var st apache.SharedState
	if err := json.Unmarshal(b, &st); err != nil {
		return nil, err
	}
	return &st, nil
}

// sharedAlive reports whether the keeper and its brokers are there.
func sharedAlive(st *apache.SharedState) bool {
	if st.Error != "" || st.KeeperPid == 0 || len(st.Addrs) == 0 || len(st.ScramAddrs) == 0 || len(st.TLSAddrs) == 0 {
		return false
	}
	if syscall.Kill(st.KeeperPid, 0) != nil {
		return false
	}
	for _, pid := range st.Pids {
		if syscall.Kill(pid, 0) != nil {
			return false
		}
	}
	conn, err := net.DialTimeout("tcp", st.InternalAddrs[0], time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// startKeeper starts cmd/kafkakeeper detached and waits for its state.
func startKeeper(dir string) (*apache.SharedState, error) {
	os.Remove(filepath.Join(dir, "state.json"))
	bin, err := tool("kafkakeeper")
	if err != nil {
		return nil, err
	}
	if _, err := apache.Lib(); err != nil { // fetch here, so a failure reads clearly
		return nil, err
	}
	logf, err := os.OpenFile(filepath.Join(dir, "keeper.log"), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	idle := "20s"
	if v := os.Getenv("FLUXSTREAM_KAFKA_SHARED_IDLE"); v != "" {
		idle = v
	}
	cmd := exec.Command(bin, "-dir", dir, "-idle", idle)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // outlives this test binary
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	deadline := time.After(6 * time.Minute) // the keeper's own bound is 5 min
	for {
		if st, err := readShared(dir); err == nil {
			if st.Error != "" {
				return nil, fmt.Errorf("kafkakeeper: %s", st.Error)
			}
			return st, nil
		}
		select {
		case err := <-exited:
			if st, rerr := readShared(dir); rerr == nil && st.Error != "" {
				return nil, fmt.Errorf("kafkakeeper: %s", st.Error)
			}
			log, _ := os.ReadFile(filepath.Join(dir, "keeper.log"))
			return nil, fmt.Errorf("kafkakeeper exited (%v) before the cluster was up:\n%s", err, log)
		case <-deadline:
			cmd.Process.Kill()
			return nil, fmt.Errorf("kafkakeeper: no cluster within 6 minutes")
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// tools are the programs built once per test binary.
var tools struct {
	mu    sync.Mutex
	built map[string]string
}

func tool(name string) (string, error) {
	tools.mu.Lock()
	defer tools.mu.Unlock()
	if p, ok := tools.built[name]; ok {
		return p, nil
	}
	sweepOldBuilds()
	dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", buildPrefix, os.Getpid()))
	if err != nil {
		return "", err
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("go command not found to build %s: %v", name, err)
	}
	pkg := "github.com/fluxstream/fluxstream/internal/kafkatest/cmd/" + name
	path := filepath.Join(dir, name)
	if out, err := exec.Command(goBin, "build", "-o", path, pkg).CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
	}
	if tools.built == nil {
		tools.built = map[string]string{}
	}
	tools.built[name] = path
	return path, nil
}

// Pids are the nodes' JVM process ids.
func (a *Apache) Pids() []int {
	if a.cluster != nil {
		return a.cluster.Pids()
	}
	return append([]int(nil), a.state.Pids...)
}

// Cluster is the started cluster, nil for the shared one.
func (a *Apache) Cluster() *apache.Cluster { return a.cluster }

// Addrs are the client listeners.
func (a *Apache) Addrs() []string { return append([]string(nil), a.addrs...) }

// InternalAddrs are PLAINTEXT listeners without SASL or TLS (for admin).
func (a *Apache) InternalAddrs() []string { return append([]string(nil), a.internal...) }

// TLSConfig trusts the cluster's cert; nil without TLS.
func (a *Apache) TLSConfig() *tls.Config {
	if len(a.caPEM) == 0 {
		return nil
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(a.caPEM)
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// CAFile is a PEM file of the cluster's cert, "" without TLS.
func (a *Apache) CAFile() string {
	if len(a.caPEM) == 0 {
		return ""
	}
	if a.caFile == "" {
		a.caFile = filepath.Join(a.t.TempDir(), "kafka-ca.pem")
		if err := os.WriteFile(a.caFile, a.caPEM, 0o600); err != nil {
			a.t.Fatal(err)
		}
	}
	return a.caFile
}

// ClientOpts reach the client listener: seeds, TLS, SASL as the first user.
func (a *Apache) ClientOpts() []kgo.Opt {
	opts := []kgo.Opt{kgo.SeedBrokers(a.addrs...)}
	if tc := a.TLSConfig(); tc != nil {
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if len(a.users) > 0 {
		opts = append(opts, kgo.SASL(a.users[0].SASL()))
	}
	return opts
}

// Client is a client of the client listener (ClientOpts, then opts),
// closed when t ends.
func (a *Apache) Client(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append(a.ClientOpts(), opts...)...)
	if err != nil {
		t.Fatalf("kafkatest: client: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// Admin is an admin client over the internal listener.
func (a *Apache) Admin(t testing.TB) *kadm.Client {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(a.internal...))
	if err != nil {
		t.Fatalf("kafkatest: client: %v", err)
	}
	t.Cleanup(cl.Close)
	return kadm.NewClient(cl)
}

var topicChars = regexp.MustCompile(`[^a-zA-Z0-9._-]+`)

// TopicName is a topic name of t's own: its name and a random suffix.
func TopicName(t testing.TB) string {
	var b [4]byte
	rand.Read(b[:])
	name := topicChars.ReplaceAllString(t.Name(), "_")
	if len(name) > 150 {
		name = name[:150]
	}
	return name + "-" + hex.EncodeToString(b[:])
}

// CreateTopic creates topic with partitions (replication: min(3, nodes))
// and waits until every partition has a leader.
func (a *Apache) CreateTopic(t testing.TB, topic string, partitions int, configs map[string]*string) {
	t.Helper()
	adm := a.Admin(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	resp, err := adm.CreateTopic(ctx, int32(max(partitions, 1)), -1, configs, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		t.Fatalf("kafkatest: create topic %s: %v", topic, err)
	}
	for {
		md, err := adm.Metadata(ctx, topic)
		if err == nil {
			td := md.Topics[topic]
			ok := td.Err == nil && len(td.Partitions) == max(partitions, 1)
			for _, p := range td.Partitions {
				ok = ok && p.Err == nil && p.Leader >= 0
			}
			if ok {
				return
			}
		}
		select {
		case <-ctx.Done():
			t.Fatalf("kafkatest: topic %s has no leaders: %v", topic, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Records reads topic from the start to its end offsets as of the call
// (ordered by partition, then offset). Use it on topics without
// transactions.
func (a *Apache) Records(t testing.TB, topic string) []*kgo.Record {
	t.Helper()
	return readTopic(t, func(opts ...kgo.Opt) *kgo.Client { return a.Client(t, opts...) }, topic)
}

// SelfSigned makes a throwaway cert for 127.0.0.1 (its own CA) and its
// PKCS#8 key, PEM: e.g. a CA that a cluster's cert does not chain to.
func SelfSigned(t testing.TB) (certPEM, keyPEM []byte) { t.Helper(); return selfSigned(t) }

// selfSigned makes a cert for 127.0.0.1 and its PKCS#8 key, PEM.
func selfSigned(t testing.TB) (certPEM, keyPEM []byte) {
	t.Helper()
	certPEM, keyPEM, err := apache.SelfSigned()
	if err != nil {
		t.Fatal(err)
	}
	return certPEM, keyPEM
}

// KillNode, StopNode and StartNode act on node i of a cluster the test
// started.
func (a *Apache) KillNode(i int) { a.own().KillNode(i) }

// StopNode stops node i with SIGTERM.
func (a *Apache) StopNode(i int) { a.own().StopNode(i, 30*time.Second) }

// StartNode starts node i again and waits until it is registered.
func (a *Apache) StartNode(i int) {
	a.t.Helper()
	start := time.Now()
	if err := a.own().StartNode(context.Background(), i); err != nil {
		a.t.Fatalf("kafkatest: %v", err)
	}
	a.t.Logf("kafkatest: node %d registered again in %v (its JVM CPU %v, load average %.1f)", i+1,
		time.Since(start).Round(time.Millisecond), PeersCPU([]int{a.cluster.Nodes()[i].Pid()}).Round(10*time.Millisecond), LoadAvg())
}

// Stop takes every node of a cluster the test started down (SIGTERM,
// keeping the data); Restart brings them back on the same ports.
func (a *Apache) Stop() { a.own().Stop(30 * time.Second) }

// Restart starts the stopped nodes again and waits until all are
// registered.
func (a *Apache) Restart() {
	a.t.Helper()
	start := time.Now()
	if err := a.own().Restart(context.Background()); err != nil {
		a.t.Fatalf("kafkatest: %v", err)
	}
	a.t.Logf("kafkatest: restarted in %v (load average %.1f)", time.Since(start).Round(time.Millisecond), LoadAvg())
}

func (a *Apache) own() *apache.Cluster {
	if a.cluster == nil {
		a.t.Fatalf("kafkatest: the shared cluster cannot be stopped or killed; use StartApache")
	}
	return a.cluster
}
