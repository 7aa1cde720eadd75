// Package apache runs Apache Kafka itself (the broker from Maven Central,
// org.apache.kafka:kafka_2.13 4.x, on the JVM found on PATH) for tests: it
// fetches the jars with Maven once into a cache directory, formats KRaft
// storage and starts 1 or 3 combined controller+broker nodes on 127.0.0.1,
// each on free ports, and stops them by pid.
//
// It has no testing dependency: package kafkatest wraps it for tests, and
// cmd/kafkakeeper runs the cluster shared by test binaries.
package apache

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	_ "embed"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// POM names the broker and its runtime dependencies; only
// `mvn dependency:copy-dependencies` is run on it.
//
//go:embed pom.xml
var POM []byte

// Version is the Kafka version the pom fetches.
const Version = "4.1.1"

// EnvHome overrides where the jars are cached (default: the user cache
// dir, fluxstream/kafka-<pom hash>).
const EnvHome = "FLUXSTREAM_KAFKA_HOME"

// Missing reports whether java or mvn is not on PATH (nil: both are).
func Missing() error {
	for _, name := range []string{"java", "mvn"} {
		if _, err := exec.LookPath(name); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
	}
	return nil
}

// Home is the directory the jars are cached in.
func Home() (string, error) {
	if h := os.Getenv(EnvHome); h != "" {
		return h, nil
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		dir = os.TempDir()
	}
	sum := sha256.Sum256(POM)
	return filepath.Join(dir, "fluxstream", "kafka-"+hex.EncodeToString(sum[:6])), nil
}

// Lib fetches the jars (once: later calls, from any process, find them in
// the cache) and returns the directory holding them. Maven downloads into
// ~/.m2, so a fresh cache dir on a machine with a warm ~/.m2 costs a few
// seconds, not a download.
func Lib() (string, error) {
	home, err := Home()
	if err != nil {
		return "", err
	}
	lib := filepath.Join(home, "lib")
	done := filepath.Join(lib, ".complete")
	if _, err := os.Stat(done); err == nil {
		return lib, nil
	}
	if err := os.MkdirAll(home, 0o755); err != nil {
		return "", err
	}
	unlock, err := Flock(filepath.Join(home, ".lock"), true)
	if err != nil {
		return "", err
	}
	defer unlock()
	if _, err := os.Stat(done); err == nil {
		return lib, nil // another process fetched them meanwhile
	}
	if err := Missing(); err != nil {
		return "", err
	}
	pom := filepath.Join(home, "pom.xml")
	if err := os.WriteFile(pom, POM, 0o644); err != nil {
		return "", err
	}
	tmp := lib + ".tmp"
	os.RemoveAll(tmp)
	cmd := exec.Command("mvn", "-q", "-B", "-f", pom, "dependency:copy-dependencies", "-DoutputDirectory="+tmp)
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("mvn dependency:copy-dependencies: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(tmp, ".complete"), []byte(Version+"\n"), 0o644); err != nil {
		return "", err
	}
	os.RemoveAll(lib)
	if err := os.Rename(tmp, lib); err != nil {
		return "", err
	}
	return lib, nil
}

// Flock takes an flock on path (created if needed), exclusive or shared;
// the returned func releases it. The kernel releases it when the process
// dies, however it dies.
func Flock(path string, exclusive bool) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	if err := syscall.Flock(int(f.Fd()), how); err != nil {
		f.Close()
		return nil, fmt.Errorf("flock %s: %w", path, err)
	}
	return func() { f.Close() }, nil
}

// TryFlock is Flock without waiting: ok is false when someone else holds
// a conflicting lock.
func TryFlock(path string, exclusive bool) (unlock func(), ok bool, err error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, false, err
	}
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	if err := syscall.Flock(int(f.Fd()), how|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, false, nil
		}
		return nil, false, err
	}
	return func() { f.Close() }, true, nil
}

// SASL mechanisms the cluster can enable.
const (
	Plain       = "PLAIN"
	ScramSHA256 = "SCRAM-SHA-256"
	ScramSHA512 = "SCRAM-SHA-512"
)

// User is a SASL user, created when the storage is formatted.
type User struct {
	Mechanism, Name, Password string
}

// Options configures a cluster.
type Options struct {
	Nodes int    // 1 (default) or 3; each is controller and broker
	Dir   string // where the nodes keep config, data and logs (required)
	// Users enables SASL on the client listener (SASL_PLAINTEXT, or
	// SASL_SSL with TLS). Every user exists for its own mechanism.
	Users []User
	// TLS serves the client listener with this cert and key (PEM files).
	CertFile, KeyFile string
	// PlainClient keeps the main client listener PLAINTEXT even with a
	// cert (which then serves only the TLS listeners of Extra).
	PlainClient bool
	// Extra are more client listeners, next to the main one: the shared
	// cluster serves plain, SCRAM and TLS clients from one JVM.
	Extra []Listener
	// Heap is the JVM's -Xmx (default 512m).
	Heap string
	// ReadyTimeout bounds each wait for the brokers to register, at
	// start and after StartNode/Restart (default 90 s; a failure bound
	// for a loaded machine, not a speed target).
	ReadyTimeout time.Duration
	// Config adds or overrides broker properties.
	Config map[string]string
}

// Listener is an extra client listener.
type Listener struct {
	Name string // upper case, e.g. SCRAM
	// SCRAM enables SCRAM-SHA-256 and SCRAM-SHA-512 on it (users are
	// created through the admin API, or by Options.Users at format).
	SCRAM bool
	// TLS serves it with Options.CertFile and KeyFile.
	TLS bool
}

func (l Listener) protocol() string {
	switch {
	case l.SCRAM && l.TLS:
		return "SASL_SSL"
	case l.SCRAM:
		return "SASL_PLAINTEXT"
	case l.TLS:
		return "SSL"
	}
	return "PLAINTEXT"
}

// Cluster is a running Kafka cluster.
type Cluster struct {
	opts      Options
	lib       string
	clusterID string

	mu    sync.Mutex
	nodes []*Node
}

// Node is one controller+broker process.
type Node struct {
	ID                         int
	ClientPort, InternalPort   int // the client listener, and PLAINTEXT for brokers and admin
	ControllerPort             int
	ExtraPorts                 map[string]int // Options.Extra by name
	dir, props, logFile, log4j string

	cmd    *exec.Cmd
	exited chan struct{}
}

// Pid is the node's JVM process id, 0 when it is not running.
func (n *Node) Pid() int {
	if n.cmd == nil || n.cmd.Process == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// Running reports whether the node's process is alive.
func (n *Node) Running() bool {
	if n.exited == nil {
		return false
	}
	select {
	case <-n.exited:
		return false
	default:
		return true
	}
}

// Launch fetches the jars if needed, formats and starts the nodes, and
// returns once every broker is registered and unfenced.
func Launch(ctx context.Context, opts Options) (*Cluster, error) {
	if opts.Nodes == 0 {
		opts.Nodes = 1
	}
	if opts.Nodes != 1 && opts.Nodes != 3 {
		return nil, fmt.Errorf("apache: %d nodes (1 or 3)", opts.Nodes)
	}
	if opts.Dir == "" {
		return nil, errors.New("apache: Options.Dir is required")
	}
	if opts.Heap == "" {
		opts.Heap = "512m"
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 90 * time.Second
	}
	if err := Missing(); err != nil {
		return nil, err
	}
	lib, err := Lib()
	if err != nil {
		return nil, err
	}
	c := &Cluster{opts: opts, lib: lib, clusterID: randomID()}
	for _, l := range opts.Extra {
		if l.TLS && opts.CertFile == "" {
			return nil, fmt.Errorf("apache: listener %s: TLS needs Options.CertFile and KeyFile", l.Name)
		}
	}
	per := 3 + len(opts.Extra)
	ports, err := FreePorts(per * opts.Nodes)
	if err != nil {
		return nil, err
	}
	for i := 0; i < opts.Nodes; i++ {
		dir := filepath.Join(opts.Dir, "node"+strconv.Itoa(i+1))
		p := ports[per*i:]
		n := &Node{ID: i + 1, ClientPort: p[0], InternalPort: p[1], ControllerPort: p[2], ExtraPorts: map[string]int{},
			dir: dir, props: filepath.Join(dir, "server.properties"), logFile: filepath.Join(dir, "kafka.log"), log4j: filepath.Join(dir, "log4j2.properties")}
		for j, l := range opts.Extra {
			n.ExtraPorts[l.Name] = p[3+j]
		}
		c.nodes = append(c.nodes, n)
	}
	// Format every node at once (a JVM start each).
	errs := make([]error, len(c.nodes))
	var wg sync.WaitGroup
	for i, n := range c.nodes {
		if err := c.writeConfig(n); err != nil {
			return nil, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.format(n)
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	for _, n := range c.nodes {
		if err := c.startNode(n); err != nil {
			c.Kill()
			return nil, err
		}
	}
	if err := c.WaitReady(ctx, opts.Nodes); err != nil {
		c.Kill()
		var b strings.Builder
		for i := range c.nodes {
			log := c.NodeLog(i)
			if len(log) > 6000 {
				log = "..." + log[len(log)-6000:]
			}
			fmt.Fprintf(&b, "\n--- node %d log:\n%s", i+1, log)
		}
		return nil, fmt.Errorf("%w%s", err, b.String())
	}
	return c, nil
}

// FreePorts returns n distinct ports free on 127.0.0.1 right now.
func FreePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, n)
	for i := range ports {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports[i] = l.Addr().(*net.TCPAddr).Port
	}
	return ports, nil
}

// randomID is a cluster id as Kafka makes them (16 random bytes,
// base64url), never starting with "-", which the storage tool's argument
// parser would take for an option (Kafka's own Uuid skips those too).
func randomID() string {
	for {
		var b [16]byte
		rand.Read(b[:])
		if id := base64.RawURLEncoding.EncodeToString(b[:]); id[0] != '-' {
			return id
		}
	}
}

func (c *Cluster) clientProtocol() string {
	tls := c.opts.CertFile != "" && !c.opts.PlainClient
	switch {
	case len(c.opts.Users) > 0 && tls:
		return "SASL_SSL"
	case len(c.opts.Users) > 0:
		return "SASL_PLAINTEXT"
	case tls:
		return "SSL"
	}
	return "PLAINTEXT"
}

func (c *Cluster) writeConfig(n *Node) error {
	if err := os.MkdirAll(filepath.Join(n.dir, "data"), 0o755); err != nil {
		return err
	}
	voters := make([]string, len(c.nodes))
	for i, o := range c.nodes {
		voters[i] = fmt.Sprintf("%d@127.0.0.1:%d", o.ID, o.ControllerPort)
	}
	rf := strconv.Itoa(min(3, len(c.nodes)))
	listeners := fmt.Sprintf("CLIENT://127.0.0.1:%d,INTERNAL://127.0.0.1:%d", n.ClientPort, n.InternalPort)
	protocols := "CLIENT:" + c.clientProtocol() + ",INTERNAL:PLAINTEXT,CONTROLLER:PLAINTEXT"
	for _, l := range c.opts.Extra {
		listeners += fmt.Sprintf(",%s://127.0.0.1:%d", l.Name, n.ExtraPorts[l.Name])
		protocols += "," + l.Name + ":" + l.protocol()
	}
	props := [][2]string{
		{"process.roles", "broker,controller"},
		{"node.id", strconv.Itoa(n.ID)},
		{"controller.quorum.voters", strings.Join(voters, ",")},
		{"listeners", listeners + fmt.Sprintf(",CONTROLLER://127.0.0.1:%d", n.ControllerPort)},
		{"advertised.listeners", listeners},
		{"listener.security.protocol.map", protocols},
		{"controller.listener.names", "CONTROLLER"},
		{"inter.broker.listener.name", "INTERNAL"},
		{"log.dirs", filepath.Join(n.dir, "data")},
		{"auto.create.topics.enable", "false"},
		{"num.partitions", "1"},
		{"default.replication.factor", rf},
		{"min.insync.replicas", "1"},
		{"offsets.topic.replication.factor", rf},
		{"offsets.topic.num.partitions", "4"},
		{"transaction.state.log.replication.factor", rf},
		{"transaction.state.log.min.isr", "1"},
		{"transaction.state.log.num.partitions", "4"},
		{"share.coordinator.state.topic.replication.factor", rf},
		{"share.coordinator.state.topic.min.isr", "1"},
		{"group.initial.rebalance.delay.ms", "0"},
		// A node restarted after SIGKILL registers again only once its
		// old session expired (default 9 s).
		{"broker.session.timeout.ms", "6000"},
		{"broker.heartbeat.interval.ms", "1000"},
		// Consumer groups in tests use short sessions, so a member killed
		// with SIGKILL leaves its partitions quickly.
		{"group.min.session.timeout.ms", "1000"},
		{"num.network.threads", "2"},
		{"num.io.threads", "4"},
		{"num.recovery.threads.per.data.dir", "2"},
		{"log.cleaner.dedupe.buffer.size", "8388608"},
		{"log.cleaner.backoff.ms", "1000"},
	}
	if len(c.opts.Users) > 0 {
		mechs := map[string]bool{}
		var plainUsers []string
		for _, u := range c.opts.Users {
			mechs[u.Mechanism] = true
			if u.Mechanism == Plain {
				plainUsers = append(plainUsers, fmt.Sprintf("user_%s=%q", u.Name, u.Password))
			}
		}
		var names []string
		for _, m := range []string{Plain, ScramSHA256, ScramSHA512} {
			if mechs[m] {
				names = append(names, m)
			}
		}
		props = append(props, [2]string{"sasl.enabled.mechanisms", strings.Join(names, ",")})
		if mechs[Plain] {
			props = append(props, [2]string{"listener.name.client.plain.sasl.jaas.config",
				"org.apache.kafka.common.security.plain.PlainLoginModule required " + strings.Join(plainUsers, " ") + ";"})
		}
		for _, m := range []string{ScramSHA256, ScramSHA512} {
			if mechs[m] {
				props = append(props, [2]string{"listener.name.client." + strings.ToLower(m) + ".sasl.jaas.config",
					"org.apache.kafka.common.security.scram.ScramLoginModule required;"})
			}
		}
	}
	for _, l := range c.opts.Extra {
		name := strings.ToLower(l.Name)
		if l.SCRAM {
			props = append(props, [2]string{"listener.name." + name + ".sasl.enabled.mechanisms", ScramSHA256 + "," + ScramSHA512})
			for _, m := range []string{ScramSHA256, ScramSHA512} {
				props = append(props, [2]string{"listener.name." + name + "." + strings.ToLower(m) + ".sasl.jaas.config",
					"org.apache.kafka.common.security.scram.ScramLoginModule required;"})
			}
		}
	}
	if c.opts.CertFile != "" {
		cert, err := os.ReadFile(c.opts.CertFile)
		if err != nil {
			return err
		}
		key, err := os.ReadFile(c.opts.KeyFile)
		if err != nil {
			return err
		}
		// Inline PEM (no keystore file): the chain and an unencrypted
		// PKCS#8 key.
		var names []string
		if c.clientProtocol() == "SSL" || c.clientProtocol() == "SASL_SSL" {
			names = append(names, "client")
		}
		for _, l := range c.opts.Extra {
			if l.TLS {
				names = append(names, strings.ToLower(l.Name))
			}
		}
		for _, name := range names {
			props = append(props,
				[2]string{"listener.name." + name + ".ssl.keystore.type", "PEM"},
				[2]string{"listener.name." + name + ".ssl.keystore.certificate.chain", strings.TrimSpace(string(cert))},
				[2]string{"listener.name." + name + ".ssl.keystore.key", strings.TrimSpace(string(key))},
			)
		}
	}
	for k, v := range c.opts.Config {
		props = deleteProp(props, k)
		props = append(props, [2]string{k, v})
	}
	var b bytes.Buffer
	for _, p := range props {
		fmt.Fprintf(&b, "%s=%s\n", p[0], escapeProp(p[1]))
	}
	if err := os.WriteFile(n.props, b.Bytes(), 0o600); err != nil {
		return err
	}
	level := "warn"
	if v := os.Getenv("FLUXSTREAM_KAFKA_LOG"); v != "" {
		level = v // e.g. info, to see why a node does not come up
	}
	return os.WriteFile(n.log4j, []byte(strings.Replace(log4j2, "rootLogger.level = warn", "rootLogger.level = "+level, 1)), 0o644)
}

func deleteProp(props [][2]string, key string) [][2]string {
	out := props[:0]
	for _, p := range props {
		if p[0] != key {
			out = append(out, p)
		}
	}
	return out
}

// escapeProp escapes a value for a Java properties file.
func escapeProp(v string) string {
	r := strings.NewReplacer(`\`, `\\`, "\n", `\n`)
	return r.Replace(v)
}

// The broker's own log: warnings and errors, for a failing test to show.
const log4j2 = `status = warn
appender.file.type = Console
appender.file.name = OUT
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = warn
rootLogger.appenderRef.out.ref = OUT
logger.state.name = state.change.logger
logger.state.level = error
`

// jvmArgs are the JVM flags: small, C1 only (a broker that lives for a
// test run gains nothing from C2's warm-up) and serial GC, for 2 cores.
func (c *Cluster) jvmArgs(n *Node) []string {
	return []string{"-Xms128m", "-Xmx" + c.opts.Heap, "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
		"-Djava.awt.headless=true", "-Dlog4j2.configurationFile=" + n.log4j,
		"-cp", filepath.Join(c.lib, "*")}
}

func (c *Cluster) format(n *Node) error {
	args := append(c.jvmArgs(n), "kafka.tools.StorageTool", "format", "--ignore-formatted", "-t", c.clusterID, "-c", n.props)
	for _, u := range c.opts.Users {
		if u.Mechanism != Plain {
			args = append(args, "--add-scram", fmt.Sprintf("%s=[name=%s,password=%s]", u.Mechanism, u.Name, u.Password))
		}
	}
	out, err := exec.Command("java", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("apache: format node %d: %v\n%s", n.ID, err, out)
	}
	return nil
}

func (c *Cluster) startNode(n *Node) error {
	logf, err := os.OpenFile(n.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(logf, "=== start %s\n", time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command("java", append(c.jvmArgs(n), "kafka.Kafka", n.props)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// The node dies with whoever started it, even by SIGKILL.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return fmt.Errorf("apache: start node %d: %w", n.ID, err)
	}
	n.cmd = cmd
	n.exited = make(chan struct{})
	exited := n.exited
	go func() {
		cmd.Wait()
		logf.Close()
		close(exited)
	}()
	return nil
}

// WaitReady waits until want brokers are registered (unfenced) as seen
// through the internal listener.
func (c *Cluster) WaitReady(ctx context.Context, want int) error {
	ctx, cancel := context.WithTimeout(ctx, c.opts.ReadyTimeout)
	defer cancel()
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.InternalAddrs()...), kgo.DialTimeout(5*time.Second))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	var last error
	for {
		for _, n := range c.nodes {
			if n.cmd != nil && !n.Running() {
				return fmt.Errorf("apache: node %d exited (%v); its log:\n%s", n.ID, n.cmd.ProcessState, c.NodeLog(n.ID-1))
			}
		}
		rctx, rcancel := context.WithTimeout(ctx, 10*time.Second) // a starved JVM answers late
		md, err := adm.BrokerMetadata(rctx)
		rcancel()
		if err == nil && len(md.Brokers) >= want {
			return nil
		}
		if err == nil {
			var ids []int32
			for _, b := range md.Brokers {
				ids = append(ids, b.NodeID)
			}
			err = fmt.Errorf("%d of %d brokers registered (ids %v; controller %d)", len(md.Brokers), want, ids, md.Controller)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("apache: cluster not ready: %v", last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// NodeLog is node i's log so far.
func (c *Cluster) NodeLog(i int) string {
	b, _ := os.ReadFile(c.nodes[i].logFile)
	return string(b)
}

// Nodes are the cluster's nodes, by index (node id - 1).
func (c *Cluster) Nodes() []*Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*Node(nil), c.nodes...)
}

// Addrs are the client listeners' addresses.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = fmt.Sprintf("127.0.0.1:%d", n.ClientPort)
	}
	return out
}

// ExtraAddrs are the addresses of the extra listener name.
func (c *Cluster) ExtraAddrs(name string) []string {
	out := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = fmt.Sprintf("127.0.0.1:%d", n.ExtraPorts[name])
	}
	return out
}

// InternalAddrs are the PLAINTEXT listeners (no SASL, no TLS), for admin.
func (c *Cluster) InternalAddrs() []string {
	out := make([]string, len(c.nodes))
	for i, n := range c.nodes {
		out[i] = fmt.Sprintf("127.0.0.1:%d", n.InternalPort)
	}
	return out
}

// StopNode ends node i with SIGTERM (a controlled shutdown), SIGKILL if it
// is not gone within timeout.
func (c *Cluster) StopNode(i int, timeout time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[i]
	if !n.Running() {
		return
	}
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
	case <-time.After(timeout):
		n.cmd.Process.Kill()
		<-n.exited
	}
}

// KillNode ends node i with SIGKILL, as a crash would.
func (c *Cluster) KillNode(i int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.nodes[i]
	if n.Running() {
		n.cmd.Process.Kill()
		<-n.exited
	}
}

// StartNode starts a stopped node again over its data and ports, and waits
// until it is registered again.
func (c *Cluster) StartNode(ctx context.Context, i int) error {
	c.mu.Lock()
	n := c.nodes[i]
	if n.Running() {
		c.mu.Unlock()
		return fmt.Errorf("apache: node %d is running", n.ID)
	}
	err := c.startNode(n)
	c.mu.Unlock()
	if err != nil {
		return err
	}
	return c.WaitReady(ctx, len(c.nodes))
}

// Restart starts every stopped node again over its data and ports, all
// at once, and waits until all are registered.
func (c *Cluster) Restart(ctx context.Context) error {
	c.mu.Lock()
	for _, n := range c.nodes {
		if !n.Running() {
			if err := c.startNode(n); err != nil {
				c.mu.Unlock()
				return err
			}
		}
	}
	c.mu.Unlock()
	return c.WaitReady(ctx, len(c.nodes))
}

// Stop ends every node with SIGTERM, all at once, SIGKILL after timeout.
func (c *Cluster) Stop(timeout time.Duration) {
	var wg sync.WaitGroup
	for i := range c.nodes {
		wg.Add(1)
		go func() { defer wg.Done(); c.StopNode(i, timeout) }()
	}
	wg.Wait()
}

// Kill ends every node with SIGKILL.
func (c *Cluster) Kill() {
	for i := range c.nodes {
		c.KillNode(i)
	}
}

// Pids are the running nodes' process ids.
func (c *Cluster) Pids() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []int
	for _, n := range c.nodes {
		if n.Running() {
			out = append(out, n.Pid())
		}
	}
	return out
}

// SharedState is what cmd/kafkakeeper writes to DIR/state.json once its
// cluster is up (or failed to start: Error).
type SharedState struct {
	KeeperPid     int      `json:"keeper_pid"`
	Pids          []int    `json:"pids,omitempty"`
	Addrs         []string `json:"addrs,omitempty"`
	InternalAddrs []string `json:"internal_addrs,omitempty"`
	ScramAddrs    []string `json:"scram_addrs,omitempty"` // SASL_PLAINTEXT, SCRAM-SHA-256/512 (users: admin API)
	TLSAddrs      []string `json:"tls_addrs,omitempty"`   // SSL, cert CAPEM
	CAPEM         string   `json:"ca_pem,omitempty"`
	Error         string   `json:"error,omitempty"`
	StartSeconds  float64  `json:"start_seconds,omitempty"`
}
