// Command kfakebroker runs franz-go's kfake as a Kafka cluster in its own
// process on 127.0.0.1, so that tests can cut brokers away, kill the whole
// cluster or restart it over a data directory, as with a real Kafka.
//
// When ready it prints one JSON line on stdout with the brokers. It then reads
// line commands on stdin, each answered by one JSON line:
//
//	remove N   take broker N away: its listener and every open connection
//	add N      bring broker N back on its old address
//	shuffle    move every partition leader at random
//	quit       shut down (saving state with -data-dir) and exit
//
// It also exits when stdin closes, so a dead test never leaves it running,
// and on SIGTERM or SIGINT.
package main

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/sasl"
	"github.com/twmb/franz-go/pkg/sasl/plain"
	"github.com/twmb/franz-go/pkg/sasl/scram"
)

// Broker is one node in the JSON lines we print.
type Broker struct {
	Node int32  `json:"node"`
	Addr string `json:"addr"`
	Up   bool   `json:"up"`
}

// Reply is every JSON line we print: the ready line and each answer.
type Reply struct {
	Ready   bool     `json:"ready,omitempty"`
	OK      bool     `json:"ok"`
	Error   string   `json:"error,omitempty"`
	Brokers []Broker `json:"brokers,omitempty"`
	CAPEM   string   `json:"ca_pem,omitempty"` // with -tls: the self-signed cert to trust
}

type user struct{ mech, name, pass string }

type topic struct {
	name  string
	parts int32
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(s string) error { *m = append(*m, s); return nil }

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "kfakebroker:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		nbrokers    = flag.Int("brokers", 3, "number of brokers")
		replication = flag.Int("replication", 0, "replication factor of the -topic topics (0: kfake's default, min(3, brokers)); kfake keeps one shared log, so this only shapes metadata")
		ports       = flag.String("ports", "", "comma-separated seed ports, one per broker (0 or empty: pick a free one)")
		dataDir     = flag.String("data-dir", "", "kfake persistence directory (state survives restarts)")
		syncWrites  = flag.Bool("sync", false, "with -data-dir: fsync every write")
		useTLS      = flag.Bool("tls", false, "serve TLS with a fresh self-signed cert for 127.0.0.1 (printed as ca_pem)")
		logLevel    = flag.String("log-level", "none", "kfake log level on stderr: none, error, warn, info, debug")
		topicFlags  multiFlag
		userFlags   multiFlag
	)
	flag.Var(&topicFlags, "topic", "pre-create topic `name[:partitions]` (partitions default 1; repeatable)")
	flag.Var(&userFlags, "user", "SASL user `MECHANISM:name:password`, MECHANISM one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (repeatable; any enables SASL)")
	flag.Parse()

	topics, err := parseTopics(topicFlags)
	if err != nil {
		return err
	}
	users, err := parseUsers(userFlags)
	if err != nil {
		return err
	}
	portList, err := parsePorts(*ports, *nbrokers)
	if err != nil {
		return err
	}
	level, err := parseLevel(*logLevel)
	if err != nil {
		return err
	}

	tr := &tracker{lns: make(map[string]*trackedListener)}
	opts := []kfake.Opt{
		kfake.NumBrokers(*nbrokers),
		kfake.Ports(portList...),
		kfake.ListenFn(tr.listen),
		kfake.WithLogger(kfake.BasicLogger(os.Stderr, level)),
	}
	if *dataDir != "" {
		opts = append(opts, kfake.DataDir(*dataDir))
	}
	if *syncWrites {
		opts = append(opts, kfake.SyncWrites())
	}
	for _, u := range users {
		// Superusers: kfake checks no ACLs for them, and ACLs stay off.
		opts = append(opts, kfake.Superuser(u.mech, u.name, u.pass))
	}
	if len(users) > 0 {
		opts = append(opts, kfake.EnableSASL())
	}
	var caPEM []byte
	var clientTLS *tls.Config
	if *useTLS {
		cert, pemBytes, err := selfSigned()
		if err != nil {
			return err
		}
		caPEM = pemBytes
		opts = append(opts, kfake.TLS(&tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}))
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pemBytes)
		clientTLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}

	c, err := kfake.NewCluster(opts...)
	if err != nil {
		return err
	}
	defer c.Close() // saves state to -data-dir

	answerAuthFailures(c, users)

	// Remember each node's address: "add N" reuses it, and ListenAddrs
	// forgets removed nodes.
	nodes := make([]Broker, 0, *nbrokers)
	for i, a := range c.ListenAddrs() {
		nodes = append(nodes, Broker{Node: int32(i), Addr: a, Up: true})
	}

	// Topics are created here, not through auto-creation: kfake does not
	// persist auto-created topics until a clean shutdown, and with
	// -data-dir SeedTopics applies only to a fresh directory.
	if err := createTopics(c, topics, *replication, nodes, users, clientTLS); err != nil {
		return err
	}

	out := &printer{enc: json.NewEncoder(os.Stdout)}
	out.print(Reply{Ready: true, OK: true, Brokers: nodes, CAPEM: string(caPEM)})

	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, os.Interrupt)
	cmds := make(chan string)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		for sc.Scan() {
			cmds <- sc.Text()
		}
		close(cmds) // stdin closed: the test is gone or done
	}()

	for {
		select {
		case <-sigs:
			return nil
		case line, ok := <-cmds:
			if !ok {
				return nil
			}
			verb, arg, _ := strings.Cut(strings.TrimSpace(line), " ")
			if verb == "" {
				continue
			}
			if verb == "quit" {
				c.Close()
				out.print(Reply{OK: true, Brokers: nodes})
				return nil
			}
			if err := command(c, tr, nodes, verb, strings.TrimSpace(arg)); err != nil {
				out.print(Reply{Error: err.Error(), Brokers: nodes})
				continue
			}
			out.print(Reply{OK: true, Brokers: nodes})
		}
	}
}

// command runs one stdin command, updating nodes in place.
func command(c *kfake.Cluster, tr *tracker, nodes []Broker, verb, arg string) error {
	if verb == "shuffle" {
		c.ShufflePartitionLeaders()
		return nil
	}
	if verb != "remove" && verb != "add" {
		return fmt.Errorf("unknown command %q (want remove N, add N, shuffle, quit)", verb)
	}
	n, err := strconv.Atoi(arg)
	if err != nil || n < 0 || n >= len(nodes) {
		return fmt.Errorf("%s: no broker %q (have 0..%d)", verb, arg, len(nodes)-1)
	}
	b := &nodes[n]
	switch {
	case verb == "remove" && !b.Up:
		return fmt.Errorf("broker %d is already removed", n)
	case verb == "add" && b.Up:
		return fmt.Errorf("broker %d is already up", n)
	case verb == "remove":
		// RemoveNode closes the listener and moves the leaders, but
		// leaves accepted connections open; a client on them would keep
		// getting NOT_LEADER from a node that no longer exists.
		if err := c.RemoveNode(b.Node); err != nil {
			return err
		}
		tr.closeConns(b.Addr)
		b.Up = false
	default:
		_, port, _ := net.SplitHostPort(b.Addr)
		p, _ := strconv.Atoi(port)
		if _, _, err := c.AddNode(b.Node, p); err != nil {
			return err
		}
		b.Up = true
	}
	return nil
}

// createTopics creates the topics that do not exist yet (a reloaded
// -data-dir already has them). kfake's CreateTopic has no replication
// factor, so a set one goes through a CreateTopics request.
func createTopics(c *kfake.Cluster, topics []topic, replication int, nodes []Broker, users []user, clientTLS *tls.Config) error {
	if replication == 0 {
		for _, t := range topics {
			if err := c.CreateTopic(t.name, t.parts, nil); err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
				return fmt.Errorf("create topic %s: %w", t.name, err)
			}
		}
		return nil
	}
	if len(topics) == 0 {
		return nil
	}
	copts := []kgo.Opt{kgo.SeedBrokers(nodes[0].Addr)}
	if len(users) > 0 {
		copts = append(copts, kgo.SASL(mechanism(users[0])))
	}
	if clientTLS != nil {
		copts = append(copts, kgo.DialTLSConfig(clientTLS))
	}
	cl, err := kgo.NewClient(copts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, t := range topics {
		resp, err := adm.CreateTopic(ctx, t.parts, int16(replication), nil, t.name)
		if err == nil {
			err = resp.Err
		}
		if err != nil && !errors.Is(err, kerr.TopicAlreadyExists) {
			return fmt.Errorf("create topic %s: %w", t.name, err)
		}
	}
	return nil
}

// answerAuthFailures makes a wrong PLAIN password and an unknown SCRAM user
// get SASL_AUTHENTICATION_FAILED, as from Kafka, which clients report at
// once. kfake itself just closes the connection, which clients retry as a
// network error. A wrong SCRAM password still gets that: only kfake holds
// the SCRAM exchange's state.
func answerAuthFailures(c *kfake.Cluster, users []user) {
	if len(users) == 0 {
		return
	}
	plainPass := make(map[string]string)
	scramUser := make(map[string]bool)
	for _, u := range users {
		if u.mech == "PLAIN" {
			plainPass[u.name] = u.pass
		} else {
			scramUser[u.name] = true
		}
	}
	c.ControlKey(int16(kmsg.SASLAuthenticate), func(kreq kmsg.Request) (kmsg.Response, error, bool) {
		c.KeepControl()
		req := kreq.(*kmsg.SASLAuthenticateRequest)
		msg := string(req.SASLAuthBytes)
		var bad bool
		if f := strings.Split(msg, "\x00"); len(f) == 3 { // PLAIN: authzid NUL user NUL pass
			pass, ok := plainPass[f[1]]
			bad = !ok || pass != f[2]
		} else if strings.HasPrefix(msg, "n,") || strings.HasPrefix(msg, "y,") { // SCRAM client-first
			_, rest, _ := strings.Cut(msg, ",n=")
			name, _, _ := strings.Cut(rest, ",")
			bad = !scramUser[strings.NewReplacer("=2C", ",", "=3D", "=").Replace(name)]
		}
		if !bad {
			return nil, nil, false // kfake goes on as usual
		}
		resp := req.ResponseKind().(*kmsg.SASLAuthenticateResponse)
		resp.ErrorCode = kerr.SaslAuthenticationFailed.Code
		resp.ErrorMessage = kmsg.StringPtr("Authentication failed: invalid credentials")
		return resp, nil, true
	})
}

func mechanism(u user) sasl.Mechanism {
	switch u.mech {
	case "PLAIN":
		return plain.Auth{User: u.name, Pass: u.pass}.AsMechanism()
	case "SCRAM-SHA-512":
		return scram.Auth{User: u.name, Pass: u.pass}.AsSha512Mechanism()
	default:
		return scram.Auth{User: u.name, Pass: u.pass}.AsSha256Mechanism()
	}
}

// printer writes one JSON line per reply.
type printer struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (p *printer) print(r Reply) {
	p.mu.Lock()
	defer p.mu.Unlock()
	_ = p.enc.Encode(r) // nobody left to tell if stdout is gone
}

// tracker is kfake's ListenFn: it keeps, per listen address, the
// connections each listener accepted, so that "remove" can close them.
type tracker struct {
	mu  sync.Mutex
	lns map[string]*trackedListener
}

func (t *tracker) listen(network, address string) (net.Listener, error) {
	ln, err := net.Listen(network, address)
	if err != nil {
		return nil, err
	}
	tl := &trackedListener{Listener: ln, conns: make(map[net.Conn]struct{})}
	t.mu.Lock()
	t.lns[ln.Addr().String()] = tl
	t.mu.Unlock()
	return tl, nil
}

func (t *tracker) closeConns(addr string) {
	t.mu.Lock()
	tl := t.lns[addr]
	t.mu.Unlock()
	if tl != nil {
		tl.closeAll()
	}
}

type trackedListener struct {
	net.Listener
	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
}

func (l *trackedListener) Accept() (net.Conn, error) {
	conn, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed { // accepted just as the node was removed
		conn.Close()
		return nil, net.ErrClosed
	}
	tc := &trackedConn{Conn: conn, l: l}
	l.conns[tc] = struct{}{}
	return tc, nil
}

func (l *trackedListener) closeAll() {
	l.mu.Lock()
	l.closed = true
	conns := l.conns
	l.conns = make(map[net.Conn]struct{})
	l.mu.Unlock()
	l.Listener.Close()
	for c := range conns {
		c.Close()
	}
}

type trackedConn struct {
	net.Conn
	l *trackedListener
}

func (c *trackedConn) Close() error {
	c.l.mu.Lock()
	delete(c.l.conns, c)
	c.l.mu.Unlock()
	return c.Conn.Close()
}

func parseTopics(fs []string) ([]topic, error) {
	var ts []topic
	for _, f := range fs {
		name, parts, hasParts := strings.Cut(f, ":")
		t := topic{name: name, parts: 1}
		if hasParts {
			n, err := strconv.Atoi(parts)
			if err != nil || n < 1 {
				return nil, fmt.Errorf("-topic %q: partitions must be a positive number", f)
			}
			t.parts = int32(n)
		}
		if name == "" {
			return nil, fmt.Errorf("-topic %q: empty name", f)
		}
		ts = append(ts, t)
	}
	return ts, nil
}

func parseUsers(fs []string) ([]user, error) {
	var us []user
	for _, f := range fs {
		parts := strings.SplitN(f, ":", 3)
		if len(parts) != 3 || parts[1] == "" {
			return nil, fmt.Errorf("-user %q: want MECHANISM:name:password", f)
		}
		u := user{mech: strings.ToUpper(parts[0]), name: parts[1], pass: parts[2]}
		if !slices.Contains([]string{"PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"}, u.mech) {
			return nil, fmt.Errorf("-user %q: mechanism must be PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512", f)
		}
		us = append(us, u)
	}
	return us, nil
}

func parsePorts(s string, n int) ([]int, error) {
	if n < 1 {
		return nil, fmt.Errorf("-brokers %d: need at least one", n)
	}
	ports := make([]int, n) // zeros: kfake picks free ports
	if s == "" {
		return ports, nil
	}
	fields := strings.Split(s, ",")
	if len(fields) != n {
		return nil, fmt.Errorf("-ports %q: want %d ports, one per broker", s, n)
	}
	for i, f := range fields {
		p, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || p < 0 || p > 65535 {
			return nil, fmt.Errorf("-ports %q: bad port %q", s, f)
		}
		ports[i] = p
	}
	return ports, nil
}

func parseLevel(s string) (kfake.LogLevel, error) {
	switch strings.ToLower(s) {
	case "none", "":
		return kfake.LogLevelNone, nil
	case "error":
		return kfake.LogLevelError, nil
	case "warn":
		return kfake.LogLevelWarn, nil
	case "info":
		return kfake.LogLevelInfo, nil
	case "debug":
		return kfake.LogLevelDebug, nil
	}
	return 0, fmt.Errorf("-log-level %q: want none, error, warn, info or debug", s)
}

// selfSigned makes a throwaway cert for 127.0.0.1, ::1 and localhost that is
// its own CA, so clients trust it by adding it to their roots.
func selfSigned() (tls.Certificate, []byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "kfakebroker"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		DNSNames:              []string{"localhost"},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, nil, err
	}
	cert := tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}
