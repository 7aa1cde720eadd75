// Package kafkatest runs a Kafka cluster for tests: franz-go's kfake in its
// own process (cmd/kfakebroker) on 127.0.0.1. A separate process, unlike an
// in-process kfake, can be killed and restarted like a real broker, and its
// connections really break when a broker is removed.
//
// The program is built once per test binary with the go command found on
// PATH (go test puts its own first), so tests need nothing installed.
//
// Methods that take no testing.TB report failures through the one given to
// Start, so call them from the test goroutine.
package kafkatest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"

	"github.com/fluxstream/fluxstream/core/coretest"
)

const pkgPath = "github.com/fluxstream/fluxstream/internal/kafkatest/cmd/kfakebroker"

// SASL mechanisms kfake enforces.
const (
	Plain       = "PLAIN"
	ScramSHA256 = "SCRAM-SHA-256"
	ScramSHA512 = "SCRAM-SHA-512"
)

// User is a SASL user of the cluster.
type User struct {
	Mechanism string // Plain, ScramSHA256 or ScramSHA512
	Name      string
	Password  string
}

// SASL is u as a franz-go SASL mechanism.
func (u User) SASL() sasl.Mechanism {
	switch u.Mechanism {
	case Plain:
		return plain.Auth{User: u.Name, Pass: u.Password}.AsMechanism()
	case ScramSHA512:
		return scram.Auth{User: u.Name, Pass: u.Password}.AsSha512Mechanism()
	default:
		return scram.Auth{User: u.Name, Pass: u.Password}.AsSha256Mechanism()
	}
}

// Options configures a cluster. The zero value is three brokers, no topics.
type Options struct {
	Brokers int            // default 3
	Topics  map[string]int // name -> partitions (0: 1), created before Start returns
	// Replication is the topics' replication factor as metadata reports it
	// (0: min(3, brokers)). kfake keeps one log that every broker serves,
	// so removing a broker never loses records whatever this is.
	Replication int
	// DataDir makes the cluster persist there and reload on Restart.
	DataDir    string
	SyncWrites bool   // with DataDir: fsync every write
	Users      []User // any enables SASL; Client logs in as the first
	TLS        bool   // serve TLS with a throwaway cert (see TLSConfig, CAFile)
	Ports      []int  // one per broker; nil or 0: a free port
	LogLevel   string // kfake's log (none, error, warn, info, debug), shown if the test fails
}

// Cluster is a running kfakebroker process.
type Cluster struct {
	t    testing.TB
	opts Options

	mu      sync.Mutex // serializes commands and process changes
	proc    *process
	brokers []broker
	caPEM   []byte
	caFile  string
}

type broker struct {
	Node int32  `json:"node"`
	Addr string `json:"addr"`
	Up   bool   `json:"up"`
}

type reply struct {
	Ready   bool     `json:"ready"`
	OK      bool     `json:"ok"`
	Error   string   `json:"error"`
	Brokers []broker `json:"brokers"`
	CAPEM   string   `json:"ca_pem"`
}

// process is one run of the program.
type process struct {
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan []byte   // stdout, one JSON line each; closed at EOF
	exited chan struct{} // closed once Wait returned
	stderr *coretest.SyncBuffer
}

// Start builds (once) and starts a cluster; t.Cleanup stops it.
func Start(t testing.TB, opts Options) *Cluster {
	t.Helper()
	if opts.Brokers == 0 {
		opts.Brokers = 3
		if len(opts.Ports) > 0 {
			opts.Brokers = len(opts.Ports)
		}
	}
	c := &Cluster{t: t, opts: opts}
	t.Cleanup(c.Stop)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.start(opts.Ports)
	return c
}

func (c *Cluster) start(ports []int) {
	c.t.Helper()
	bin, err := binary()
	if err != nil {
		c.t.Fatalf("kafkatest: %v", err)
	}
	args := []string{"-brokers", strconv.Itoa(c.opts.Brokers), "-replication", strconv.Itoa(c.opts.Replication)}
	if len(ports) > 0 {
		ps := make([]string, len(ports))
		for i, p := range ports {
			ps[i] = strconv.Itoa(p)
		}
		args = append(args, "-ports", strings.Join(ps, ","))
	}
	names := make([]string, 0, len(c.opts.Topics))
	for name := range c.opts.Topics {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		args = append(args, "-topic", fmt.Sprintf("%s:%d", name, max(c.opts.Topics[name], 1)))
	}
	for _, u := range c.opts.Users {
		args = append(args, "-user", u.Mechanism+":"+u.Name+":"+u.Password)
	}
	if c.opts.DataDir != "" {
		args = append(args, "-data-dir", c.opts.DataDir)
	}
	if c.opts.SyncWrites {
		args = append(args, "-sync")
	}
	if c.opts.TLS {
		args = append(args, "-tls")
	}
	if c.opts.LogLevel != "" {
		args = append(args, "-log-level", c.opts.LogLevel)
	}

	p := &process{
		cmd:    exec.Command(bin, args...),
		lines:  make(chan []byte, 1),
		exited: make(chan struct{}),
		stderr: new(coretest.SyncBuffer),
	}
	p.cmd.Stderr = p.stderr
	stdout, err := p.cmd.StdoutPipe()
	if err != nil {
		c.t.Fatalf("kafkatest: %v", err)
	}
	if p.stdin, err = p.cmd.StdinPipe(); err != nil {
		c.t.Fatalf("kafkatest: %v", err)
	}
	if err := p.cmd.Start(); err != nil {
		c.t.Fatalf("kafkatest: start %s: %v", bin, err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			p.lines <- bytes.Clone(sc.Bytes())
		}
		close(p.lines)
		p.cmd.Wait() // only after every read, as os/exec asks
		close(p.exited)
	}()
	c.proc = p

	r, err := c.read(30 * time.Second)
	if err != nil || !r.Ready {
		c.kill()
		c.t.Fatalf("kafkatest: cluster did not start: %v\n%s", err, p.stderr)
	}
	c.brokers = r.Brokers
	c.caPEM, c.caFile = []byte(r.CAPEM), ""
	c.t.Cleanup(func() {
		if c.t.Failed() && p.stderr.Len() > 0 {
			c.t.Logf("kfakebroker stderr:\n%s", p.stderr)
		}
	})
}

// read waits for the next JSON line.
func (c *Cluster) read(timeout time.Duration) (reply, error) {
	var r reply
	select {
	case line, ok := <-c.proc.lines:
		if !ok {
			<-c.proc.exited
			return r, fmt.Errorf("kfakebroker exited (%v)", c.proc.cmd.ProcessState)
		}
		if err := json.Unmarshal(line, &r); err != nil {
			return r, fmt.Errorf("bad line %q: %v", line, err)
		}
		return r, nil
	case <-time.After(timeout):
		return r, fmt.Errorf("no answer in %v", timeout)
	}
}

// command sends one line and waits for its answer.
func (c *Cluster) command(line string) {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		c.t.Fatalf("kafkatest: %s: cluster is stopped", line)
	}
	if _, err := fmt.Fprintln(c.proc.stdin, line); err != nil {
		c.t.Fatalf("kafkatest: %s: %v", line, err)
	}
	r, err := c.read(30 * time.Second)
	if err != nil {
		c.t.Fatalf("kafkatest: %s: %v\n%s", line, err, c.proc.stderr)
	}
	if !r.OK {
		c.t.Fatalf("kafkatest: %s: %s", line, r.Error)
	}
	c.brokers = r.Brokers
}

// Addrs returns every broker's address by node id, removed ones included:
// a broker comes back on the same address, so they all make fine seeds.
func (c *Cluster) Addrs() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	addrs := make([]string, len(c.brokers))
	for i, b := range c.brokers {
		addrs[i] = b.Addr
	}
	return addrs
}

// RemoveBroker takes broker i away: its listener closes, every connection
// to it breaks, and its partitions get new leaders. Removing the last
// broker (kfake's controller) also breaks admin requests such as
// CreateTopics until it is back; producing and consuming do not need it.
func (c *Cluster) RemoveBroker(i int) { c.t.Helper(); c.command("remove " + strconv.Itoa(i)) }

// AddBroker brings broker i back on its old address; leaders move again.
func (c *Cluster) AddBroker(i int) { c.t.Helper(); c.command("add " + strconv.Itoa(i)) }

// ShuffleLeaders moves every partition's leader to a random broker.
func (c *Cluster) ShuffleLeaders() { c.t.Helper(); c.command("shuffle") }

// Stop shuts the cluster down cleanly (with DataDir, state is saved). It
// does nothing on a stopped cluster.
func (c *Cluster) Stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		return
	}
	c.proc.stdin.Close() // the program exits when stdin closes
	select {
	case <-c.proc.exited:
	case <-time.After(15 * time.Second):
		c.t.Errorf("kafkatest: kfakebroker did not exit after stdin closed; killing it")
		c.kill()
	}
	c.proc = nil
}

// Kill ends the cluster with SIGKILL, as a crash would.
func (c *Cluster) Kill() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc != nil {
		c.kill()
		c.proc = nil
	}
}

func (c *Cluster) kill() {
	c.proc.cmd.Process.Kill()
	c.proc.stdin.Close()
	<-c.proc.exited
}

// Restart starts a stopped or killed cluster again on the same addresses
// (and DataDir). Without DataDir it comes back empty but for the topics.
// With TLS it serves a new cert: take TLSConfig or CAFile again.
func (c *Cluster) Restart() {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc != nil {
		c.t.Fatalf("kafkatest: Restart: cluster is running")
	}
	ports := make([]int, len(c.brokers))
	for i, b := range c.brokers {
		_, p, _ := net.SplitHostPort(b.Addr)
		ports[i], _ = strconv.Atoi(p)
	}
	c.start(ports)
}

// Pids is the kfakebroker process's id, none while it is stopped.
func (c *Cluster) Pids() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.proc == nil {
		return nil
	}
	return []int{c.proc.cmd.Process.Pid}
}

// TLSConfig is a client config trusting the cluster's cert, nil without TLS.
func (c *Cluster) TLSConfig() *tls.Config {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.caPEM) == 0 {
		return nil
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.caPEM)
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

// CAFile is a PEM file of the cluster's cert (for configs that take a
// path), "" without TLS.
func (c *Cluster) CAFile() string {
	c.t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.caPEM) == 0 {
		return ""
	}
	if c.caFile == "" {
		c.caFile = filepath.Join(c.t.TempDir(), "kafkatest-ca.pem")
		if err := os.WriteFile(c.caFile, c.caPEM, 0o600); err != nil {
			c.t.Fatalf("kafkatest: %v", err)
		}
	}
	return c.caFile
}

// ClientOpts are the options to reach the cluster: seeds, TLS, and SASL as
// the first user. kgo.SASL appends mechanisms and the first one wins, so to
// log in as someone else start from kgo.SeedBrokers(c.Addrs()...) instead.
func (c *Cluster) ClientOpts() []kgo.Opt {
	opts := []kgo.Opt{kgo.SeedBrokers(c.Addrs()...)}
	if tc := c.TLSConfig(); tc != nil {
		opts = append(opts, kgo.DialTLSConfig(tc))
	}
	if len(c.opts.Users) > 0 {
		opts = append(opts, kgo.SASL(c.opts.Users[0].SASL()))
	}
	return opts
}

// Client is a franz-go client of the cluster (ClientOpts, then opts),
// closed when the test ends.
func (c *Cluster) Client(t testing.TB, opts ...kgo.Opt) *kgo.Client {
	t.Helper()
	cl, err := kgo.NewClient(append(c.ClientOpts(), opts...)...)
	if err != nil {
		t.Fatalf("kafkatest: client: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

// Records reads topic from the start up to its end offsets as of the call,
// ordered by partition then offset. Transaction markers are not counted, so
// use it on topics written without transactions.
func (c *Cluster) Records(t testing.TB, topic string) []*kgo.Record {
	t.Helper()
	return readTopic(t, func(opts ...kgo.Opt) *kgo.Client { return c.Client(t, opts...) }, topic)
}

// readTopic is Records for any cluster: client makes its clients.
func readTopic(t testing.TB, client func(...kgo.Opt) *kgo.Client, topic string) []*kgo.Record {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	end, start := endOffsets(ctx, t, kadm.NewClient(client()), topic)
	if len(end) == 0 {
		return nil
	}

	cl := client(kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: start}))
	var recs []*kgo.Record
	next := make(map[int32]int64) // per partition: offset after the last record seen
	for done := false; !done; {
		fs := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("kafkatest: read %s: got to %v of %v: %v", topic, next, end, ctx.Err())
		}
		fs.EachError(func(_ string, p int32, err error) {
			t.Fatalf("kafkatest: read %s[%d]: %v", topic, p, err)
		})
		fs.EachRecord(func(r *kgo.Record) {
			if r.Offset < end[r.Partition] {
				recs = append(recs, r)
				next[r.Partition] = r.Offset + 1
			}
		})
		done = true
		for p, e := range end {
			done = done && next[p] >= e
		}
	}
	sort.SliceStable(recs, func(i, j int) bool {
		if recs[i].Partition != recs[j].Partition {
			return recs[i].Partition < recs[j].Partition
		}
		return recs[i].Offset < recs[j].Offset
	})
	return recs
}

// endOffsets lists topic's end offsets: end holds those of the partitions
// that have records, start an offset at the start of each of them, to
// read them to their end.
func endOffsets(ctx context.Context, t testing.TB, adm *kadm.Client, topic string) (end map[int32]int64, start map[int32]kgo.Offset) {
	t.Helper()
	ends, err := adm.ListEndOffsets(ctx, topic)
	if err == nil {
		err = ends.Error()
	}
	if err != nil {
		t.Fatalf("kafkatest: end offsets of %s: %v", topic, err)
	}
	end = make(map[int32]int64)
	start = make(map[int32]kgo.Offset)
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			end[o.Partition] = o.Offset
			start[o.Partition] = kgo.NewOffset().AtStart()
		}
	})
	return end, start
}

// build holds the program, built once per test binary.
var build struct {
	once sync.Once
	path string
	err  error
}

// binary builds cmd/kfakebroker into a temp dir named after this process.
// Nothing runs when the test binary ends, so the dir stays; the next build
// removes those whose process is gone.
func binary() (string, error) {
	build.once.Do(func() {
		sweepOldBuilds()
		dir, err := os.MkdirTemp("", fmt.Sprintf("%s%d-", buildPrefix, os.Getpid()))
		if err != nil {
			build.err = err
			return
		}
		goBin, err := exec.LookPath("go")
		if err != nil {
			build.err = fmt.Errorf("go command not found to build %s: %v", pkgPath, err)
			return
		}
		path := filepath.Join(dir, "kfakebroker")
		out, err := exec.Command(goBin, "build", "-o", path, pkgPath).CombinedOutput()
		if err != nil {
			build.err = fmt.Errorf("go build %s: %v\n%s", pkgPath, err, out)
			return
		}
		build.path = path
	})
	return build.path, build.err
}

const buildPrefix = "fluxstream-kafkatest-"

func sweepOldBuilds() {
	old, _ := filepath.Glob(filepath.Join(os.TempDir(), buildPrefix+"*"))
	for _, dir := range old {
		pid, _, _ := strings.Cut(strings.TrimPrefix(filepath.Base(dir), buildPrefix), "-")
		n, err := strconv.Atoi(pid)
		if err != nil {
			continue
		}
		if p, err := os.FindProcess(n); err == nil && errors.Is(p.Signal(syscall.Signal(0)), os.ErrProcessDone) {
			os.RemoveAll(dir)
		}
	}
}
