package host

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/fluxstream/fluxstream/plugins/internal/sinkv1"
	"github.com/fluxstream/fluxstream/plugins/internal/wire"
)

// ChecksumError is a plugin program whose SHA-256 is not the configured one.
type ChecksumError struct {
	Path      string
	Want, Got string
}

func (e *ChecksumError) Error() string {
	return fmt.Sprintf("plugin %s: sha256 mismatch: the config says %s, the file has %s; refusing to start it (if the new program is trusted, put its digest in sha256:)", e.Path, e.Want, e.Got)
}

// FileSHA256 returns the hex SHA-256 of a file.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// StartError is a plugin that could not be started, with one line saying
// why (Reason) and go-plugin's own error.
type StartError struct {
	Path   string
	Reason string
	Err    error
}

func (e *StartError) Error() string { return fmt.Sprintf("plugin %s: %s", e.Path, e.Reason) }
func (e *StartError) Unwrap() error { return e.Err }

// spec is what starting a plugin needs.
type spec struct {
	path         string
	args         []string
	env          map[string]string
	sha256       string // "" = do not check (plugins check PATH)
	startTimeout time.Duration
	maxMsg       int
	log          *slog.Logger // labelled with the node
}

// proc is one running plugin process.
type proc struct {
	spec   *spec
	client *plugin.Client
	cmd    *exec.Cmd
	sink   sinkv1.SinkClient
	desc   *sinkv1.DescribeResponse
	pid    int
	stderr *lineLogger
}

// start checks the digest, starts the program, runs the handshake and
// Describe. It kills what it started on any error.
func start(ctx context.Context, sp *spec) (_ *proc, err error) {
	if sp.sha256 != "" {
		got, err := FileSHA256(sp.path)
		if err != nil {
			return nil, &StartError{Path: sp.path, Reason: fmt.Sprintf("cannot read the program: %v", err), Err: err}
		}
		if !strings.EqualFold(got, sp.sha256) {
			return nil, &ChecksumError{Path: sp.path, Want: strings.ToLower(sp.sha256), Got: got}
		}
	}
	cmd := exec.Command(sp.path, sp.args...)
	cmd.Env = append(cmd.Env, wire.EnvHostPID+"="+strconv.Itoa(os.Getpid()))
	for k, v := range sp.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	// Its own process group: a terminal's ^C reaches fluxstream, which
	// then stops the plugin in order, instead of both at once.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr := newLineLogger(sp.log, "stderr")
	cc := &plugin.ClientConfig{
		HandshakeConfig:  wire.Handshake(),
		Plugins:          plugin.PluginSet{wire.PluginName: &wire.Plugin{}},
		Cmd:              cmd,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		AutoMTLS:         true,
		Managed:          true,
		StartTimeout:     sp.startTimeout,
		Logger:           hclog.NewNullLogger(),
		Stderr:           stderr,
		SyncStderr:       stderr,
		SyncStdout:       newLineLogger(sp.log, "stdout"),
		GRPCDialOptions: []grpc.DialOption{
			grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(sp.maxMsg), grpc.MaxCallSendMsgSize(sp.maxMsg)),
			// Batches are big messages on a local socket: windows that
			// take a whole batch at once, instead of 64KiB round trips.
			grpc.WithInitialWindowSize(wire.WindowBytes), grpc.WithInitialConnWindowSize(wire.WindowBytes),
			grpc.WithReadBufferSize(wire.BufferBytes), grpc.WithWriteBufferSize(wire.BufferBytes),
		},
	}
	if sp.sha256 != "" {
		sum, _ := hex.DecodeString(sp.sha256)
		cc.SecureConfig = &plugin.SecureConfig{Checksum: sum, Hash: sha256.New()}
	}
	client := plugin.NewClient(cc)
	p := &proc{spec: sp, client: client, cmd: cmd, stderr: stderr}
	defer func() {
		if err != nil {
			p.kill()
		}
	}()
	rpc, err := client.Client()
	if err != nil {
		// go-plugin may report the exit before its stderr reader wrote the
		// last lines (the cookie complaint, 1 run in ~10 under load); Kill
		// waits for that reader.
		client.Kill()
		return nil, &StartError{Path: sp.path, Reason: classify(err, stderr.tail()), Err: err}
	}
	if cmd.Process != nil {
		p.pid = cmd.Process.Pid
	}
	stderr.setPID(p.pid)
	raw, err := rpc.Dispense(wire.PluginName)
	if err != nil {
		return nil, &StartError{Path: sp.path, Reason: "dispense: " + err.Error(), Err: err}
	}
	p.sink = raw.(sinkv1.SinkClient)
	dctx, cancel := context.WithTimeout(ctx, sp.startTimeout)
	defer cancel()
	p.desc, err = p.sink.Describe(dctx, &sinkv1.DescribeRequest{})
	if err != nil {
		return nil, &StartError{Path: sp.path, Reason: classifyRPC("Describe", err, stderr.tail()), Err: err}
	}
	if p.desc.ProtocolVersion != uint32(wire.ProtocolVersion) {
		return nil, &StartError{Path: sp.path, Reason: fmt.Sprintf("its Describe says protocol version %d, its handshake said %d: a broken plugin", p.desc.ProtocolVersion, wire.ProtocolVersion)}
	}
	return p, nil
}

var (
	incompatibleRe = regexp.MustCompile(`incompatible API version with plugin\. Plugin version: (\S+), Client versions: \[?([^\]]*)\]?`)
	unrecognizedRe = regexp.MustCompile(`(?s)Unrecognized remote plugin message: (.*?)(\nFailed to read any lines.*|\n|$)`)
	unsupportedRe  = regexp.MustCompile(`unsupported plugin protocol "([^"]*)"`)
)

// classify turns go-plugin's start errors into one line an admin can act on.
func classify(err error, stderrTail []string) string {
	msg := err.Error()
	exitedEarly := func() string {
		last := strings.Join(stderrTail, " | ")
		for _, l := range stderrTail {
			if strings.Contains(l, "magic cookie") || strings.Contains(l, "This binary is a plugin") {
				return fmt.Sprintf("wrong magic cookie: the program exited without a handshake because it expects another program's cookie, not %s=...; it is not a fluxstream sink plugin (its stderr: %s)", wire.MagicCookieKey, last)
			}
		}
		if last == "" {
			return "exited before the handshake, printing nothing"
		}
		return "exited before the handshake; its stderr: " + last
	}
	switch {
	case errors.Is(err, plugin.ErrChecksumsDoNotMatch):
		return "sha256 mismatch (the program changed between the check and the start)"
	case incompatibleRe.MatchString(msg):
		m := incompatibleRe.FindStringSubmatch(msg)
		return fmt.Sprintf("other protocol version: the plugin speaks fluxstream plugin protocol %s, this fluxstream speaks %s; rebuild the plugin against a matching SDK", m[1], strings.TrimSpace(m[2]))
	case strings.Contains(msg, "incompatible core API version"):
		return "other go-plugin core protocol: " + firstLine(msg) + "; rebuild the plugin with a current go-plugin"
	case unsupportedRe.MatchString(msg):
		return fmt.Sprintf("no gRPC: the plugin serves %q, fluxstream plugins must serve gRPC (use the fluxstream SDK, or go-plugin's GRPCServer)", unsupportedRe.FindStringSubmatch(msg)[1])
	case unrecognizedRe.MatchString(msg):
		line := unrecognizedRe.FindStringSubmatch(msg)[1]
		if strings.TrimSpace(line) == "" {
			return exitedEarly()
		}
		return fmt.Sprintf("junk on stdout: the plugin printed %q before the handshake line; a plugin must keep stdout clean until then (log to stderr)", clip(line, 120))
	case strings.Contains(msg, "Error parsing protocol version"), strings.Contains(msg, "error parsing core protocol version"), strings.Contains(msg, "unknown address type"):
		return "junk on stdout: the first line is not a go-plugin handshake (" + firstLine(msg) + "); a plugin must keep stdout clean until the handshake"
	case strings.Contains(msg, "plugin exited before we could connect"):
		return exitedEarly()
	case strings.Contains(msg, "timeout while waiting for plugin to start"):
		return "no handshake line on stdout within start_timeout (is it a fluxstream plugin? does it block before serving?)"
	case strings.Contains(msg, "authentication handshake failed"), strings.Contains(msg, "tls:"), strings.Contains(msg, "x509"):
		return "TLS failed (AutoMTLS): the plugin must serve TLS with the client certificate in PLUGIN_CLIENT_CERT and send its own in the handshake: " + firstLine(msg)
	case errors.Is(err, os.ErrNotExist), errors.Is(err, os.ErrPermission), errors.Is(err, exec.ErrNotFound):
		return "cannot run the program: " + msg
	}
	return firstLine(msg)
}

// classifyRPC explains a failed call right after the handshake.
func classifyRPC(call string, err error, stderrTail []string) string {
	st, _ := status.FromError(err)
	switch st.Code() {
	case codes.Unimplemented:
		return fmt.Sprintf("no fluxstream sink service: it speaks gRPC but %s is unimplemented (%s)", call, st.Message())
	case codes.Unavailable:
		if strings.Contains(st.Message(), "handshake") || strings.Contains(st.Message(), "tls") {
			return "TLS failed (AutoMTLS): " + st.Message()
		}
		if len(stderrTail) > 0 {
			return fmt.Sprintf("%s failed, the plugin is gone: %s; its stderr: %s", call, st.Message(), strings.Join(stderrTail, " | "))
		}
	case codes.DeadlineExceeded:
		return fmt.Sprintf("%s got no answer within start_timeout", call)
	}
	return fmt.Sprintf("%s failed: %s", call, firstLine(err.Error()))
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	return s
}

func clip(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// exited reports whether the process is gone.
func (p *proc) exited() bool { return p.client.Exited() }

// exitState says how the process ended ("" while it runs).
func (p *proc) exitState() string {
	if !p.client.Exited() || p.cmd.ProcessState == nil {
		return ""
	}
	return p.cmd.ProcessState.String()
}

// kill stops the process at once (SIGKILL) and cleans up the client.
func (p *proc) kill() {
	if p.cmd.Process != nil && !p.client.Exited() {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
	}
	p.client.Kill()
}

// stop closes the plugin in order: Flush, Close, then go-plugin's
// shutdown (which kills it if it does not exit).
func (p *proc) stop(ctx context.Context) error {
	var errs []error
	if !p.exited() {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if _, err := p.sink.Flush(cctx, &sinkv1.FlushRequest{}); err != nil {
			errs = append(errs, fmt.Errorf("flush: %w", err))
		}
		if _, err := p.sink.Close(cctx, &sinkv1.CloseRequest{}); err != nil {
			errs = append(errs, fmt.Errorf("close: %w", err))
		}
		cancel()
	}
	p.client.Kill()
	return errors.Join(errs...)
}

// lineLogger logs what a plugin writes, line by line, through the node's
// logger. JSON lines with a level and a message (the SDKs' log format,
// slog's and hclog's) keep their level and attributes; other lines are
// logged at info, panics and tracebacks at error.
type lineLogger struct {
	log    *slog.Logger
	stream string
	mu     sync.Mutex
	pid    int
	part   []byte
	last   []string // the last few lines, for start errors
	inErr  bool     // inside a panic or traceback
}

func newLineLogger(log *slog.Logger, stream string) *lineLogger {
	return &lineLogger{log: log, stream: stream}
}

func (l *lineLogger) setPID(pid int) {
	l.mu.Lock()
	l.pid = pid
	l.mu.Unlock()
}

func (l *lineLogger) tail() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.last...)
}

func (l *lineLogger) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(b)
	// go-plugin hands Stderr whole lines without their newline; the stdio
	// streams come in chunks.
	if l.stream == "stderr" && len(l.part) == 0 && !strings.Contains(string(b), "\n") {
		l.line(string(b))
		return n, nil
	}
	l.part = append(l.part, b...)
	for {
		i := strings.IndexByte(string(l.part), '\n')
		if i < 0 {
			break
		}
		l.line(string(l.part[:i]))
		l.part = l.part[i+1:]
	}
	if len(l.part) > 64<<10 {
		l.line(string(l.part))
		l.part = nil
	}
	return n, nil
}
