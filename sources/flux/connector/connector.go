// Package connector speaks to a Flux broker without libflux: the local://
// connector's unix socket, or ssh:// through `flux relay` over ssh's
// stdin/stdout (the same framing). It multiplexes RPCs by matchtag and
// delivers event messages.
package connector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/fluxstream/fluxstream/sources/flux/wire"
)

// DefaultURI is the system instance's local connector.
const DefaultURI = "local:///run/flux/local"

// URIFromEnv returns $FLUX_URI, or the system instance's URI.
func URIFromEnv() string {
	if u := os.Getenv("FLUX_URI"); u != "" {
		return u
	}
	return DefaultURI
}

// Options tune a connection.
type Options struct {
	// MaxMessage bounds one incoming message (0: wire.DefaultMaxMessage).
	MaxMessage int
	// SSHCommand overrides $FLUX_SSH (default "ssh") for ssh:// URIs.
	SSHCommand string
	// RemoteFlux overrides $FLUX_SSH_RCMD (default "flux"), the flux
	// command run on the remote host.
	RemoteFlux string
	// Stderr receives the ssh process's stderr (nil: discarded).
	Stderr io.Writer
}

// RPCError is an error response from the broker or a service.
type RPCError struct {
	Topic  string
	Errnum syscall.Errno
	Msg    string // the error string the service sent, if any
}

func (e *RPCError) Error() string {
	msg := e.Msg
	if msg == "" {
		msg = e.Errnum.Error()
	}
	return fmt.Sprintf("%s: %s (%s)", e.Topic, msg, errnoName(e.Errnum))
}

// Is lets errors.Is(err, syscall.ENODATA) and friends work.
func (e *RPCError) Is(target error) bool {
	t, ok := target.(syscall.Errno)
	return ok && t == e.Errnum
}

func errnoName(e syscall.Errno) string {
	switch e {
	case syscall.EPERM:
		return "EPERM"
	case syscall.ENOENT:
		return "ENOENT"
	case syscall.ENOSYS:
		return "ENOSYS"
	case syscall.ENODATA:
		return "ENODATA"
	case syscall.EPROTO:
		return "EPROTO"
	case syscall.EINVAL:
		return "EINVAL"
	case syscall.EHOSTUNREACH:
		return "EHOSTUNREACH"
	}
	return fmt.Sprintf("errno %d", int(e))
}

// Conn is a connection to a broker. Safe for concurrent use.
type Conn struct {
	rw     io.ReadWriteCloser
	r      *wire.Reader
	wmu    sync.Mutex
	cmd    *exec.Cmd // ssh
	mu     sync.Mutex
	next   uint32
	calls  map[uint32]*Call
	events chan wire.Message
	done   chan struct{}
	stop   chan struct{} // closed by Close
	err    error         // why the read loop stopped
	closed bool
}

// Call is an RPC in progress. Its responses arrive on C, which is closed
// after the last one (a non-streaming response, an error response, or the
// connection's end: then Err says why).
type Call struct {
	Topic     string
	Matchtag  uint32
	Streaming bool
	C         <-chan wire.Message
	c         chan wire.Message
	conn      *Conn
}

// Dial connects to uri: local:///path/to/local or
// ssh://[user@]host[:port]/path/to/local.
func Dial(ctx context.Context, uri string, opts Options) (*Conn, error) {
	u, err := url.Parse(uri)
	if err != nil {
		return nil, fmt.Errorf("flux uri %q: %w", uri, err)
	}
	switch u.Scheme {
	case "local":
		if u.Host != "" {
			return nil, fmt.Errorf("flux uri %q: local URIs have no host: local:///path/to/local", uri)
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "unix", u.Path)
		if err != nil {
			return nil, fmt.Errorf("connect to flux at %s: %w", uri, err)
		}
		if dl, ok := ctx.Deadline(); ok {
			c.SetReadDeadline(dl)
		} else {
			c.SetReadDeadline(time.Now().Add(handshakeTimeout))
		}
		if err := handshake(c); err != nil {
			c.Close()
			return nil, fmt.Errorf("connect to flux at %s: %w", uri, err)
		}
		c.SetReadDeadline(time.Time{})
		return newConn(c, nil, opts), nil
	case "ssh":
		return dialSSH(ctx, u, opts)
	case "":
		return nil, fmt.Errorf("flux uri %q: no scheme (want local:///path or ssh://host/path)", uri)
	}
	return nil, fmt.Errorf("flux uri %q: unsupported scheme %q (local, ssh)", uri, u.Scheme)
}

const handshakeTimeout = 30 * time.Second

// ErrHandshake wraps a refusal at connect time.
var ErrHandshake = errors.New("broker refused the connection")

// errClosedEarly: the peer closed before sending the handshake byte.
var errClosedEarly = fmt.Errorf("%w: closed before the handshake byte", ErrHandshake)

// handshake reads the byte the broker sends on accept (flux-core's usock):
// 0 is welcome, anything else an errno (EPERM when the user is neither
// the instance owner nor an allowed guest).
func handshake(r io.Reader) error {
	var b [1]byte
	if _, err := io.ReadFull(r, b[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return errClosedEarly
		}
		return fmt.Errorf("handshake: %w", err)
	}
	if b[0] != 0 {
		return fmt.Errorf("%w: %w (%s)", ErrHandshake, syscall.Errno(b[0]), errnoName(syscall.Errno(b[0])))
	}
	return nil
}

// SSHArgs builds the command that reaches a remote broker the way
// flux-core's ssh connector does: ssh [-p port] [user@]host flux relay PATH.
func SSHArgs(u *url.URL, opts Options) ([]string, error) {
	if u.Host == "" || u.Path == "" {
		return nil, fmt.Errorf("flux uri %q: want ssh://[user@]host[:port]/path/to/local", u.String())
	}
	ssh := opts.SSHCommand
	if ssh == "" {
		ssh = os.Getenv("FLUX_SSH")
	}
	if ssh == "" {
		ssh = "ssh"
	}
	rcmd := opts.RemoteFlux
	if rcmd == "" {
		rcmd = os.Getenv("FLUX_SSH_RCMD")
	}
	if rcmd == "" {
		rcmd = "flux"
	}
	args := []string{ssh}
	if p := u.Port(); p != "" {
		args = append(args, "-p", p)
	}
	host := u.Hostname()
	if u.User != nil && u.User.Username() != "" {
		host = u.User.Username() + "@" + host
	}
	return append(args, host, rcmd, "relay", u.Path), nil
}

func dialSSH(ctx context.Context, u *url.URL, opts Options) (*Conn, error) {
	args, err := SSHArgs(u, opts)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(args[0], args[1:]...)
	stderr := &tailBuffer{max: 4096}
	if opts.Stderr != nil {
		cmd.Stderr = io.MultiWriter(opts.Stderr, stderr)
	} else {
		cmd.Stderr = stderr
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("connect to flux at %s: start %s: %w", u.Redacted(), args[0], err)
	}
	hs := make(chan error, 1)
	go func() { hs <- handshake(stdout) }()
	var herr error
	select {
	case herr = <-hs:
	case <-ctx.Done():
		herr = ctx.Err()
	case <-time.After(handshakeTimeout):
		herr = errors.New("no handshake from `flux relay` in time")
	}
	if herr != nil {
		// stdout closed before the handshake byte: ssh or the remote
		// command is exiting; its exit status says which failed.
		exited := errors.Is(herr, errClosedEarly)
		code := waitExit(cmd, exited)
		msg := strings.TrimSpace(stderr.String())
		if exited {
			if serr := sshFailure(args, code, msg); serr != nil {
				return nil, fmt.Errorf("connect to flux at %s: %w", u.Redacted(), serr)
			}
			herr = fmt.Errorf("%w (%s exited with status %d)", herr, args[0], code)
		}
		if msg != "" {
			herr = fmt.Errorf("%w; ssh said: %s", herr, msg)
		}
		return nil, fmt.Errorf("connect to flux at %s (%s): %w", u.Redacted(), strings.Join(args, " "), herr)
	}
	return newConn(pipeRWC{stdout, stdin}, cmd, opts), nil
}

// waitExit reaps the ssh process and returns its exit status (-1 when it
// was killed). exiting says it closed its stdout, so it is on its way out:
// give it a moment to exit by itself before killing it.
func waitExit(cmd *exec.Cmd, exiting bool) int {
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	if !exiting {
		cmd.Process.Kill()
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-done
	}
	return cmd.ProcessState.ExitCode()
}

// ErrRemote marks a failure of ssh or of the remote command that a quick
// retry will not fix (ssh exit 255: authentication refused, unknown host
// key, host unreachable; exit 127/126: no runnable flux on the remote
// PATH). Callers retry it with their longest backoff.
var ErrRemote = errors.New("ssh could not run flux relay")

// SSHError is why `ssh host flux relay PATH` ended before the relay's
// handshake, with the tail of what it wrote on stderr.
type SSHError struct {
	Command  []string // what was run
	ExitCode int
	Stderr   string // last 4 KiB of the process's stderr, trimmed
}

func (e *SSHError) Error() string {
	var why string
	switch e.ExitCode {
	case 255:
		why = "ssh failed (exit status 255: authentication refused, host key, or host unreachable)"
	case 127:
		why = fmt.Sprintf("the remote command %q was not found (exit status 127); set FLUX_SSH_RCMD to the path of flux on that host", e.remoteFlux())
	case 126:
		why = fmt.Sprintf("the remote command %q cannot be run (exit status 126)", e.remoteFlux())
	default:
		why = fmt.Sprintf("exit status %d", e.ExitCode)
	}
	msg := fmt.Sprintf("%s: %s (%s)", ErrRemote.Error(), why, strings.Join(e.Command, " "))
	if e.Stderr != "" {
		msg += "; stderr: " + e.Stderr
	}
	return msg
}

// Is makes errors.Is(err, ErrRemote) true.
func (e *SSHError) Is(target error) bool { return target == ErrRemote }

// remoteFlux is the remote command of Command (the word before "relay").
func (e *SSHError) remoteFlux() string {
	for i := len(e.Command) - 1; i > 0; i-- {
		if e.Command[i] == "relay" {
			return e.Command[i-1]
		}
	}
	return "flux"
}

// sshFailure classifies the exit status of an ssh process that never
// relayed: ssh's own failure (255) and a missing or unrunnable remote
// command (127, 126, as sh reports them) are permanent; anything else is
// the relay's own exit (it could not reach the broker), left to the
// handshake error.
func sshFailure(args []string, code int, stderr string) error {
	switch code {
	case 255, 127, 126:
		if len(stderr) > 0 {
			lines := strings.Split(stderr, "\n")
			stderr = strings.Join(lines[max(0, len(lines)-5):], "\n")
		}
		return &SSHError{Command: args, ExitCode: code, Stderr: stderr}
	}
	return nil
}

// tailBuffer keeps the last max bytes written (the ssh process's stderr,
// for error messages).
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if over := len(t.b) - t.max; over > 0 {
		t.b = t.b[over:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return string(t.b)
}

type pipeRWC struct {
	io.ReadCloser
	w io.WriteCloser
}

func (p pipeRWC) Write(b []byte) (int, error) { return p.w.Write(b) }
func (p pipeRWC) Close() error {
	return errors.Join(p.w.Close(), p.ReadCloser.Close())
}

// NewConn wraps an established stream (for tests and custom transports).
func NewConn(rw io.ReadWriteCloser, opts Options) *Conn { return newConn(rw, nil, opts) }

func newConn(rw io.ReadWriteCloser, cmd *exec.Cmd, opts Options) *Conn {
	c := &Conn{
		rw: rw, r: wire.NewReader(rw, opts.MaxMessage), cmd: cmd,
		calls: map[uint32]*Call{}, events: make(chan wire.Message, 64),
		done: make(chan struct{}), stop: make(chan struct{}),
	}
	go c.readLoop()
	return c
}

// Done is closed when the connection ends; Err then says why.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err is why the connection ended (nil while it is up; io.EOF when the
// broker closed it).
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Events delivers event messages of subscribed topics.
func (c *Conn) Events() <-chan wire.Message { return c.events }

func (c *Conn) readLoop() {
	var err error
	defer func() {
		c.mu.Lock()
		if c.err == nil {
			c.err = err
		}
		for tag, call := range c.calls {
			close(call.c)
			delete(c.calls, tag)
		}
		c.mu.Unlock()
		close(c.done)
	}()
	for {
		var m wire.Message
		m, err = c.r.ReadMessage()
		if err != nil {
			return
		}
		switch m.Type {
		case wire.Response:
			c.mu.Lock()
			call := c.calls[m.Matchtag()]
			last := call != nil && (!call.Streaming || m.Errnum() != 0)
			if last {
				delete(c.calls, m.Matchtag())
			}
			c.mu.Unlock()
			if call == nil {
				continue // a response to a call we gave up on
			}
			select {
			case call.c <- m:
			case <-c.closing():
				return
			}
			if last {
				close(call.c)
			}
		case wire.Event:
			select {
			case c.events <- m:
			case <-c.closing():
				return
			}
		}
	}
}

// closing unblocks the read loop on Close. Until then, sends on call and
// event channels block: backpressure to the socket (the broker buffers)
// instead of growing our memory.
func (c *Conn) closing() <-chan struct{} { return c.stop }

// send writes one message.
func (c *Conn) send(m *wire.Message) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := wire.WriteMessage(c.rw, m); err != nil {
		return fmt.Errorf("send %s: %w", m.Topic, err)
	}
	return nil
}

// Request sends a request with a JSON payload (nil: none) and returns the
// call on which its response(s) arrive.
func (c *Conn) Request(topic string, payload any, streaming bool) (*Call, error) {
	m := wire.Message{
		Type: wire.Request, Flags: wire.FlagTopic | wire.FlagRoute,
		UserID: wire.UserIDUnknown, Rolemask: wire.RoleNone, Aux1: wire.NodeIDAny,
		Topic: topic,
	}
	if streaming {
		m.Flags |= wire.FlagStreaming
	}
	if payload != nil {
		b, err := json.Marshal(payload)
		if err != nil {
			return nil, fmt.Errorf("%s: encode payload: %w", topic, err)
		}
		m.SetJSON(b)
	}
	ch := make(chan wire.Message, 16)
	call := &Call{Topic: topic, Streaming: streaming, C: ch, c: ch, conn: c}
	c.mu.Lock()
	if c.closed || c.err != nil {
		c.mu.Unlock()
		return nil, fmt.Errorf("%s: connection closed", topic)
	}
	for {
		c.next++
		if c.next == 0 {
			c.next = 1 // 0 is FLUX_MATCHTAG_NONE
		}
		if _, busy := c.calls[c.next]; !busy {
			break
		}
	}
	call.Matchtag = c.next
	m.Aux2 = c.next
	c.calls[c.next] = call
	c.mu.Unlock()
	if err := c.send(&m); err != nil {
		c.mu.Lock()
		delete(c.calls, call.Matchtag)
		c.mu.Unlock()
		return nil, err
	}
	return call, nil
}

// Notify sends a request that expects no response.
func (c *Conn) Notify(topic string, payload any) error {
	m := wire.Message{
		Type: wire.Request, Flags: wire.FlagTopic | wire.FlagRoute | wire.FlagNoResponse,
		UserID: wire.UserIDUnknown, Rolemask: wire.RoleNone, Aux1: wire.NodeIDAny,
		Topic: topic,
	}
	if payload != nil {
		b, err := json.Marshal(payload)
		if err != nil {
			return err
		}
		m.SetJSON(b)
	}
	return c.send(&m)
}

// ResponseError turns an error response into an *RPCError (nil for
// success).
func ResponseError(m *wire.Message) error {
	if m.Errnum() == 0 {
		return nil
	}
	return &RPCError{Topic: m.Topic, Errnum: syscall.Errno(m.Errnum()), Msg: m.String()}
}

// RPC sends a request and waits for its single response, returning its
// JSON payload.
func (c *Conn) RPC(ctx context.Context, topic string, payload any) ([]byte, error) {
	call, err := c.Request(topic, payload, false)
	if err != nil {
		return nil, err
	}
	select {
	case m, ok := <-call.C:
		if !ok {
			return nil, fmt.Errorf("%s: connection lost: %w", topic, c.lostErr())
		}
		if err := ResponseError(&m); err != nil {
			return nil, err
		}
		return m.JSON(), nil
	case <-ctx.Done():
		c.forget(call.Matchtag)
		return nil, ctx.Err()
	}
}

func (c *Conn) lostErr() error {
	if err := c.Err(); err != nil {
		return err
	}
	return io.ErrUnexpectedEOF
}

func (c *Conn) forget(tag uint32) {
	c.mu.Lock()
	delete(c.calls, tag)
	c.mu.Unlock()
}

// Subscribe asks the broker for event messages whose topic starts with
// topic; they arrive on Events.
func (c *Conn) Subscribe(ctx context.Context, topic string) error {
	_, err := c.RPC(ctx, "event.subscribe", map[string]string{"topic": topic})
	return err
}

// Close ends the connection (and the ssh process).
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	if c.err == nil {
		c.err = net.ErrClosed
	}
	close(c.stop)
	c.mu.Unlock()
	err := c.rw.Close()
	if c.cmd != nil {
		done := make(chan struct{})
		go func() {
			c.cmd.Wait()
			close(done)
		}()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			c.cmd.Process.Kill()
			<-done
		}
	}
	<-c.done
	return err
}

// DescribeError adds what an operator needs to know to connection and
// RPC errors.
func DescribeError(uri string, err error) error {
	var rpcErr *RPCError
	switch {
	case errors.As(err, &rpcErr) && rpcErr.Errnum == syscall.EPERM,
		errors.Is(err, ErrHandshake) && errors.Is(err, syscall.EPERM):
		return fmt.Errorf("%w: fluxstream must run as the Flux instance owner (the 'flux' user on a system instance); the journal is owner-only", err)
	case errors.Is(err, syscall.ENOENT) && strings.HasPrefix(uri, "local://"):
		return fmt.Errorf("%w: no Flux broker socket there; is the instance running? (set FLUX_URI or the source's uri)", err)
	case errors.Is(err, syscall.ECONNREFUSED):
		return fmt.Errorf("%w: the broker socket exists but nothing accepts: the instance is down or restarting", err)
	case errors.Is(err, syscall.EACCES):
		return fmt.Errorf("%w: no permission to open the broker socket; run as the instance owner", err)
	}
	return err
}
