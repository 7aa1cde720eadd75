//go:build unix

package sdk

import (
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fluxstream/fluxstream/plugins/internal/wire"
)

// realStdout is the stdout fluxstream reads the handshake from; until
// ServeSink writes it, fd 1 points at stderr, so that whatever the
// program prints first (an init func, a library) cannot break the
// handshake.
var realStdout *os.File

func init() {
	if os.Getenv(wire.MagicCookieKey) == "" {
		return // not started as a plugin
	}
	fd, err := unix.Dup(1)
	if err != nil {
		return
	}
	syscall.CloseOnExec(fd)
	if err := unix.Dup2(2, 1); err != nil {
		unix.Close(fd)
		return
	}
	realStdout = os.NewFile(uintptr(fd), "/dev/stdout")
}

// restoreStdout hands go-plugin the real stdout for the handshake line
// (it replaces os.Stdout with a pipe of its own right after).
func restoreStdout() {
	if realStdout != nil {
		os.Stdout = realStdout
	}
}

// watchParent makes the plugin exit when fluxstream dies, even by
// SIGKILL: the kernel's parent-death signal on Linux, and on every system
// a poll of the parent pid (and of the host pid fluxstream passed, in
// case a wrapper script sits between them).
func watchParent() {
	setPdeathsig()
	ppid := os.Getppid()
	host := hostPID()
	gone := func() bool {
		if os.Getppid() != ppid || ppid == 1 {
			return true
		}
		return host > 0 && unix.Kill(host, 0) == unix.ESRCH
	}
	if gone() {
		fmt.Fprintln(os.Stderr, "fluxstream plugin: the fluxstream process that started this plugin is gone; exiting")
		os.Exit(3)
	}
	go func() {
		for range time.Tick(200 * time.Millisecond) {
			if gone() {
				fmt.Fprintln(os.Stderr, "fluxstream plugin: fluxstream is gone; exiting")
				os.Exit(3)
			}
		}
	}()
}
