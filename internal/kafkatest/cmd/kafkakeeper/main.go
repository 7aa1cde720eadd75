// Command kafkakeeper runs the Apache Kafka cluster that test binaries
// share (kafkatest.SharedApache), so that the packages of one `go test
// ./...` do not each start a JVM cluster.
//
// It starts the nodes, writes DIR/state.json, and then watches two flocks:
// every test binary using the cluster holds DIR/users.lock shared for as
// long as it lives (the kernel drops it when the process ends, however it
// ends), and takes DIR/start.lock exclusively while it joins. When the
// keeper can take both exclusively for -idle in a row, nobody uses the
// cluster: it stops the nodes by pid, removes the state and exits. A
// SIGTERM does the same at once. The nodes die with the keeper (their
// parent-death signal is SIGKILL).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/fluxstream/fluxstream/internal/kafkatest/apache"
)

func main() {
	dir := flag.String("dir", "", "shared directory (locks, state.json, cluster data)")
	nodes := flag.Int("nodes", 1, "nodes (1 or 3)")
	idle := flag.Duration("idle", 20*time.Second, "stop after this long without users")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "kafkakeeper: -dir is required")
		os.Exit(2)
	}
	os.Exit(run(*dir, *nodes, *idle))
}

func writeState(dir string, s apache.SharedState) error {
	b, _ := json.Marshal(s)
	tmp := filepath.Join(dir, "state.json.tmp")
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, filepath.Join(dir, "state.json"))
}

func run(dir string, nodes int, idle time.Duration) int {
	stateFile := filepath.Join(dir, "state.json")
	clusterDir := filepath.Join(dir, "cluster")
	os.RemoveAll(clusterDir)
	start := time.Now()
	// Besides the plain client listener: SCRAM (users created by the
	// tests through the admin API) and TLS, with a cert made here.
	certPEM, keyPEM, err := apache.SelfSigned()
	if err == nil {
		err = os.MkdirAll(clusterDir, 0o700)
	}
	certFile, keyFile := filepath.Join(clusterDir, "cert.pem"), filepath.Join(clusterDir, "key.pem")
	if err == nil {
		err = os.WriteFile(certFile, certPEM, 0o600)
	}
	if err == nil {
		err = os.WriteFile(keyFile, keyPEM, 0o600)
	}
	var c *apache.Cluster
	if err == nil {
		c, err = apache.Launch(context.Background(), apache.Options{Nodes: nodes, Dir: clusterDir, ReadyTimeout: 5 * time.Minute,
			CertFile: certFile, KeyFile: keyFile, PlainClient: true,
			Extra: []apache.Listener{{Name: "SCRAM", SCRAM: true}, {Name: "TLS", TLS: true}}})
	}
	if err != nil {
		writeState(dir, apache.SharedState{KeeperPid: os.Getpid(), Error: err.Error()})
		return 1
	}
	stop := func() {
		os.Remove(stateFile)
		c.Stop(15 * time.Second)
		os.RemoveAll(clusterDir)
	}
	if err := writeState(dir, apache.SharedState{KeeperPid: os.Getpid(), Pids: c.Pids(), Addrs: c.Addrs(),
		InternalAddrs: c.InternalAddrs(), ScramAddrs: c.ExtraAddrs("SCRAM"), TLSAddrs: c.ExtraAddrs("TLS"), CAPEM: string(certPEM),
		StartSeconds: time.Since(start).Seconds()}); err != nil {
		stop()
		return 1
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	var idleSince time.Time
	for {
		select {
		case <-sigs:
			stop()
			return 0
		case <-tick.C:
		}
		for i, n := range c.Nodes() {
			if !n.Running() {
				fmt.Fprintf(os.Stderr, "kafkakeeper: node %d exited; its log:\n%s\n", n.ID, c.NodeLog(i))
				stop()
				return 1
			}
		}
		unlockStart, ok, err := apache.TryFlock(filepath.Join(dir, "start.lock"), true)
		if err != nil || !ok {
			idleSince = time.Time{}
			continue
		}
		unlockUsers, ok, err := apache.TryFlock(filepath.Join(dir, "users.lock"), true)
		if err != nil || !ok {
			unlockStart()
			idleSince = time.Time{}
			continue
		}
		if idleSince.IsZero() {
			idleSince = time.Now()
		}
		if time.Since(idleSince) >= idle {
			stop() // still holding both locks: nobody joins meanwhile
			unlockUsers()
			unlockStart()
			return 0
		}
		unlockUsers()
		unlockStart()
	}
}
