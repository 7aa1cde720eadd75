package connector

import (
	"context"
	"errors"
	"io"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/sources/flux/fluxtest"
	"github.com/fluxstream/fluxstream/sources/flux/wire"
)

// TestMain doubles as a stand-in for `ssh host flux relay PATH`: when
// FXS_FAKE_SSH is set the test binary relays stdin/stdout to the
// unix socket named by its last argument, as `flux relay` does.
func TestMain(m *testing.M) {
	if os.Getenv("FXS_FAKE_SSH") != "" {
		os.Exit(fakeSSH(os.Args[1:]))
	}
	os.Exit(m.Run())
}

func fakeSSH(args []string) int {
	if len(args) < 4 || args[len(args)-2] != "relay" {
		os.Stderr.WriteString("fake ssh: want [-p port] host flux relay PATH\n")
		return 2
	}
	os.WriteFile(os.Getenv("FXS_FAKE_SSH"), []byte(strings.Join(args, " ")), 0o600)
	c, err := net.Dial("unix", args[len(args)-1])
	if err != nil {
		os.Stderr.WriteString(err.Error() + "\n")
		return 1
	}
	go func() {
		io.Copy(c, os.Stdin)
		c.(*net.UnixConn).CloseWrite()
	}()
	io.Copy(os.Stdout, c)
	return 0
}

const testdata = "../../../testdata/flux"

func startBroker(t *testing.T) (*fluxtest.Broker, *fluxtest.Instance) {
	return fluxtest.StartScenario(t, testdata)
}

func readStream(t *testing.T, call *Call, until func(wire.Message) bool) []wire.Message {
	t.Helper()
	var out []wire.Message
	timeout := time.After(10 * time.Second)
	for {
		select {
		case m, ok := <-call.C:
			if !ok {
				return out
			}
			out = append(out, m)
			if until != nil && until(m) {
				return out
			}
		case <-timeout:
			t.Fatalf("stream stalled after %d messages", len(out))
		}
	}
}

func isSentinel(m wire.Message) bool { return m.String() == `{"id":-1,"events":[]}` }

func TestJournalOverLocal(t *testing.T) {
	b, in := startBroker(t)
	in.SeekTo(in.PosAfterResponses(fluxtest.ScenarioPurgeAfter))
	ctx := context.Background()
	c, err := Dial(ctx, b.URI(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Subscribe(ctx, "job-purge-inactive"); err != nil {
		t.Fatal(err)
	}
	call, err := c.Request("job-manager.events-journal", map[string]bool{"full": true}, true)
	if err != nil {
		t.Fatal(err)
	}
	msgs := readStream(t, call, isSentinel)
	if len(msgs) != 24 {
		t.Fatalf("backlog + sentinel = %d messages, want 24", len(msgs))
	}
	// What went on the wire is what the recorded client sent.
	reqs := b.Requests()
	if reqs[0].Topic != "event.subscribe" || reqs[0].Payload != `{"topic":"job-purge-inactive"}` || reqs[0].Flags != 0x0b {
		t.Errorf("subscribe request %+v", reqs[0])
	}
	if reqs[1].Topic != "job-manager.events-journal" || reqs[1].Payload != `{"full":true}` || reqs[1].Flags != 0x4b {
		t.Errorf("journal request %+v", reqs[1])
	}

	in.Step(1) // the purge event
	select {
	case ev := <-c.Events():
		if ev.Topic != "job-purge-inactive" || ev.Seq() != 504 {
			t.Fatalf("event %+v", ev)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no purge event")
	}

	if err := c.Notify("job-manager.events-journal-cancel", map[string]uint32{"matchtag": call.Matchtag}); err != nil {
		t.Fatal(err)
	}
	rest := readStream(t, call, nil)
	last := rest[len(rest)-1]
	if err := ResponseError(&last); !errors.Is(err, syscall.ENODATA) {
		t.Fatalf("stream ended with %v", err)
	}
	if _, ok := <-call.C; ok {
		t.Fatal("call channel still open after the error response")
	}
}

func TestErrors(t *testing.T) {
	b, _ := startBroker(t)
	ctx := context.Background()
	c, err := Dial(ctx, b.URI(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	b.Refuse(syscall.EPERM, "Request requires owner credentials")
	call, _ := c.Request("job-manager.events-journal", map[string]bool{"full": true}, true)
	msgs := readStream(t, call, nil)
	err = ResponseError(&msgs[0])
	var rpcErr *RPCError
	if !errors.As(err, &rpcErr) || rpcErr.Errnum != syscall.EPERM ||
		err.Error() != "job-manager.events-journal: Request requires owner credentials (EPERM)" {
		t.Fatalf("refusal = %v", err)
	}
	described := DescribeError(b.URI(), err).Error()
	if !strings.Contains(described, "must run as the Flux instance owner") {
		t.Fatalf("described = %s", described)
	}

	if _, err := c.RPC(ctx, "nonesuch.method", nil); !errors.Is(err, syscall.ENOSYS) {
		t.Fatalf("unknown method: %v", err)
	}

	// A user who is not the owner is refused at connect time.
	b.RejectConnections(syscall.EPERM)
	_, err = Dial(ctx, b.URI(), Options{})
	if err == nil || !errors.Is(err, ErrHandshake) || !errors.Is(err, syscall.EPERM) {
		t.Fatalf("rejected connect: %v", err)
	}
	if d := DescribeError(b.URI(), err).Error(); !strings.Contains(d, "broker refused the connection: operation not permitted (EPERM): fluxstream must run as the Flux instance owner") {
		t.Fatalf("described = %s", d)
	}
	b.RejectConnections(0)

	for uri, want := range map[string]string{
		"local://" + t.TempDir() + "/none": "no Flux broker socket there",
		"tcp://host:1":                     `unsupported scheme "tcp"`,
		"/run/flux/local":                  "no scheme",
		"local://host/run/flux/local":      "local URIs have no host",
		"ssh://host":                       "want ssh://[user@]host[:port]/path/to/local",
	} {
		_, err := Dial(ctx, uri, Options{})
		if err != nil {
			err = DescribeError(uri, err)
		}
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Dial(%q) = %v, want %q", uri, err, want)
		}
	}
}

func TestConnectionLost(t *testing.T) {
	b, in := startBroker(t)
	in.SeekTo(in.PosAfterResponses(fluxtest.ScenarioPurgeAfter))
	b.CloseAfter(5)
	c, err := Dial(context.Background(), b.URI(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	call, _ := c.Request("job-manager.events-journal", map[string]bool{"full": true}, true)
	msgs := readStream(t, call, nil)
	if len(msgs) != 5 {
		t.Fatalf("got %d messages before the drop, want 5", len(msgs))
	}
	<-c.Done()
	if !errors.Is(c.Err(), io.EOF) {
		t.Fatalf("Err = %v, want EOF", c.Err())
	}
	if _, err := c.Request("x", nil, false); err == nil {
		t.Fatal("request on a dead connection succeeded")
	}
}

// A peer sending an oversized message is cut off with a clear error, not
// trusted with an allocation.
func TestOversizedMessage(t *testing.T) {
	b, in := startBroker(t)
	in.SeekTo(in.PosAfterResponses(fluxtest.ScenarioPurgeAfter))
	c, err := Dial(context.Background(), b.URI(), Options{MaxMessage: 300})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	call, _ := c.Request("job-manager.events-journal", map[string]bool{"full": true}, true)
	readStream(t, call, nil)
	<-c.Done()
	if !errors.Is(c.Err(), wire.ErrTooLarge) {
		t.Fatalf("Err = %v, want ErrTooLarge", c.Err())
	}
}

func TestSSH(t *testing.T) {
	u, _ := url.Parse("ssh://alice@login1:2222/run/flux/local")
	args, err := SSHArgs(u, Options{SSHCommand: "ssh", RemoteFlux: "/opt/flux/bin/flux"})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(args, " "); got != "ssh -p 2222 alice@login1 /opt/flux/bin/flux relay /run/flux/local" {
		t.Fatalf("ssh command = %s", got)
	}

	b, in := startBroker(t)
	in.SeekTo(in.PosAfterResponses(fluxtest.ScenarioPurgeAfter))
	self, _ := os.Executable()
	argsFile := t.TempDir() + "/args"
	t.Setenv("FXS_FAKE_SSH", argsFile)
	t.Setenv("FLUX_SSH", self)
	c, err := Dial(context.Background(), "ssh://flux@cluster-login"+b.Path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	call, _ := c.Request("job-manager.events-journal", map[string]bool{"full": true}, true)
	if msgs := readStream(t, call, isSentinel); len(msgs) != 24 {
		t.Fatalf("got %d messages over ssh, want 24", len(msgs))
	}
	got, _ := os.ReadFile(argsFile)
	if string(got) != "flux@cluster-login flux relay "+b.Path {
		t.Fatalf("ssh ran with %q", got)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}

	// The remote relay fails before its handshake byte: say what ssh said.
	script := t.TempDir() + "/ssh"
	os.WriteFile(script, []byte("#!/bin/sh\necho 'flux-relay: local:///run/flux/local: Operation not permitted' >&2\nexit 1\n"), 0o755)
	t.Setenv("FLUX_SSH", script)
	_, err = Dial(context.Background(), "ssh://cluster-login/run/flux/local", Options{})
	if err == nil || !strings.Contains(err.Error(), "closed before the handshake byte ("+script+" exited with status 1); ssh said: flux-relay: local:///run/flux/local: Operation not permitted") {
		t.Fatalf("failed relay: %v", err)
	}
}

// ssh that cannot run the relay at all (no flux on the remote PATH, login
// refused) is reported as what it is, with its stderr and exit status, and
// marked permanent (ErrRemote), not as a broker refusing the connection.
func TestSSHPermanentFailures(t *testing.T) {
	for _, tc := range []struct {
		script string
		code   int
		want   string
	}{
		{"ssh-not-found.sh", 127, `connect to flux at ssh://login1/run/flux/local: ssh could not run flux relay: the remote command "flux" was not found (exit status 127); set FLUX_SSH_RCMD to the path of flux on that host (` +
			"SCRIPT login1 flux relay /run/flux/local); stderr: bash: flux: command not found"},
		{"ssh-denied.sh", 255, "connect to flux at ssh://login1/run/flux/local: ssh could not run flux relay: ssh failed (exit status 255: authentication refused, host key, or host unreachable) (" +
			"SCRIPT login1 flux relay /run/flux/local); stderr: login1: Permission denied (publickey)."},
	} {
		t.Run(tc.script, func(t *testing.T) {
			script, err := filepath.Abs(filepath.Join("testdata", tc.script))
			if err != nil {
				t.Fatal(err)
			}
			t.Setenv("FLUX_SSH", script)
			_, err = Dial(context.Background(), "ssh://login1/run/flux/local", Options{})
			var serr *SSHError
			if !errors.As(err, &serr) || serr.ExitCode != tc.code {
				t.Fatalf("err = %v, want an SSHError with exit status %d", err, tc.code)
			}
			if !errors.Is(err, ErrRemote) || errors.Is(err, ErrHandshake) {
				t.Fatalf("err = %v: want ErrRemote and not ErrHandshake", err)
			}
			if want := strings.ReplaceAll(tc.want, "SCRIPT", script); err.Error() != want {
				t.Fatalf("err  = %s\nwant = %s", err, want)
			}
			if d := DescribeError("ssh://login1/run/flux/local", err); d.Error() != err.Error() {
				t.Fatalf("DescribeError changed it: %s", d)
			}
		})
	}
}
