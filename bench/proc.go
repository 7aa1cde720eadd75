package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// proc is what one whole-process run cost, from the child's rusage.
type proc struct {
	Wall      time.Duration
	User, Sys time.Duration
	MaxRSS    int64 // bytes, rusage ru_maxrss
	// Samples are VmRSS and RssAnon, once a second (only when sampled).
	Samples []rssSample
}

type rssSample struct {
	At        time.Duration
	RSS, Anon int64 // bytes
}

func (p proc) CPU() time.Duration { return p.User + p.Sys }

// run starts argv in dir with its output in dir/NAME.stdout and .stderr,
// waits, and returns the child's rusage; with sample set it reads
// /proc/PID/status every second. A non-zero exit is an error quoting the
// end of stderr.
func run(ctx context.Context, dir, name string, argv []string, env []string, sample bool) (proc, error) {
	var p proc
	stdout, err := os.Create(filepath.Join(dir, name+".stdout"))
	if err != nil {
		return p, err
	}
	defer stdout.Close()
	errPath := filepath.Join(dir, name+".stderr")
	stderr, err := os.Create(errPath)
	if err != nil {
		return p, err
	}
	defer stderr.Close()
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir, cmd.Stdout, cmd.Stderr = dir, stdout, stderr
	cmd.Env = append(os.Environ(), env...)
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return p, err
	}
	done := make(chan struct{})
	sampled := make(chan []rssSample, 1)
	go func() {
		var ss []rssSample
		if sample {
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
		loop:
			for {
				select {
				case <-done:
					break loop
				case <-tick.C:
					if s, ok := readStatus(cmd.Process.Pid); ok {
						s.At = time.Since(start)
						ss = append(ss, s)
					}
				}
			}
		}
		sampled <- ss
	}()
	werr := cmd.Wait()
	p.Wall = time.Since(start)
	close(done)
	p.Samples = <-sampled
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		p.User = time.Duration(ru.Utime.Nano())
		p.Sys = time.Duration(ru.Stime.Nano())
		p.MaxRSS = ru.Maxrss << 10 // KiB on Linux
	}
	if werr != nil {
		return p, fmt.Errorf("%s: %v; end of %s:\n%s", strings.Join(argv, " "), werr, errPath, tail(errPath, 2000))
	}
	return p, nil
}

// readStatus reads VmRSS and RssAnon of a running process.
func readStatus(pid int) (rssSample, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return rssSample{}, false
	}
	var s rssSample
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) != 2 || f[1] != "kB" {
			continue
		}
		n, _ := strconv.ParseInt(f[0], 10, 64)
		switch k {
		case "VmRSS":
			s.RSS = n << 10
		case "RssAnon":
			s.Anon = n << 10
		}
	}
	return s, s.RSS > 0
}

func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	if len(b) > n {
		b = append([]byte("..."), b[len(b)-n:]...)
	}
	return string(b)
}

// loadavg is /proc/loadavg's first three fields.
func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
