package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/fluxstream/fluxstream/internal/kafkatest/apache"
)

const (
	benchTopic = "fluxstream-bench"
	partitions = 3
)

// kafkaPeer is a cluster a Kafka run produces to. fresh gives a clean
// topic for one run (and its brokers), done drops what the run left.
type kafkaPeer interface {
	fresh(ctx context.Context, run string) (brokers []string, topic string, err error)
	done(ctx context.Context)
	close()
}

// kfakePeer starts a new kfakebroker process for every run: kfake keeps
// every record in memory, so one process per run starts each one empty.
type kfakePeer struct {
	bin, dir string
	cmd      *exec.Cmd
	stdin    io.WriteCloser
}

func (k *kfakePeer) fresh(ctx context.Context, run string) ([]string, string, error) {
	k.done(ctx)
	cmd := exec.Command(k.bin, "-brokers", "1", "-topic", benchTopic+":"+strconv.Itoa(partitions))
	errf, err := os.Create(filepath.Join(k.dir, run+".kfake.stderr"))
	if err != nil {
		return nil, "", err
	}
	defer errf.Close()
	cmd.Stderr = errf
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, "", err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	if err := cmd.Start(); err != nil {
		return nil, "", err
	}
	k.cmd, k.stdin = cmd, in
	line, err := bufio.NewReader(out).ReadBytes('\n')
	if err != nil {
		k.done(ctx)
		return nil, "", fmt.Errorf("kfakebroker: no ready line: %v", err)
	}
	var ready struct {
		Ready   bool
		Brokers []struct{ Addr string }
	}
	if err := json.Unmarshal(line, &ready); err != nil || !ready.Ready || len(ready.Brokers) == 0 {
		k.done(ctx)
		return nil, "", fmt.Errorf("kfakebroker: unexpected ready line %q", line)
	}
	go io.Copy(io.Discard, out) // answers to commands we do not send
	return []string{ready.Brokers[0].Addr}, benchTopic, nil
}

// done closes the broker's stdin (it exits then) and waits for it.
func (k *kfakePeer) done(context.Context) {
	if k.cmd == nil {
		return
	}
	k.stdin.Close()
	exited := make(chan struct{})
	go func() { k.cmd.Wait(); close(exited) }()
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		k.cmd.Process.Kill()
		<-exited
	}
	k.cmd = nil
}

func (k *kfakePeer) close() { k.done(context.Background()) }

// apachePeer is one Apache Kafka node for the whole group; each run gets a
// topic of its own, deleted after it was checked.
type apachePeer struct {
	c     *apache.Cluster
	topic string
}

func startApache(ctx context.Context, dir string) (*apachePeer, error) {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	c, err := apache.Launch(ctx, apache.Options{Dir: filepath.Join(dir, "kafka"), Heap: "1g"})
	if err != nil {
		return nil, err
	}
	return &apachePeer{c: c}, nil
}

func (a *apachePeer) fresh(ctx context.Context, run string) ([]string, string, error) {
	a.done(ctx)
	adm, cl, err := admin(a.c.Addrs())
	if err != nil {
		return nil, "", err
	}
	defer cl.Close()
	topic := benchTopic + "-" + run
	resp, err := adm.CreateTopic(ctx, partitions, 1, nil, topic)
	if err == nil {
		err = resp.Err
	}
	if err != nil {
		return nil, "", fmt.Errorf("create topic %s: %w", topic, err)
	}
	a.topic = topic
	return a.c.Addrs(), topic, nil
}

func (a *apachePeer) done(ctx context.Context) {
	if a.topic == "" {
		return
	}
	if adm, cl, err := admin(a.c.Addrs()); err == nil {
		adm.DeleteTopics(ctx, a.topic)
		cl.Close()
	}
	a.topic = ""
}

func (a *apachePeer) close() {
	a.done(context.Background())
	a.c.Stop(30 * time.Second)
}

func admin(brokers []string) (*kadm.Client, *kgo.Client, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...))
	if err != nil {
		return nil, nil, err
	}
	return kadm.NewClient(cl), cl, nil
}

// readTopic counts the records of topic (from the start to its end
// offsets now) and whether one has the key probe.
func readTopic(ctx context.Context, brokers []string, topic, probe string) (int, bool, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	adm, acl, err := admin(brokers)
	if err != nil {
		return 0, false, err
	}
	ends, err := adm.ListEndOffsets(ctx, topic)
	acl.Close()
	if err != nil {
		return 0, false, err
	}
	want := map[int32]int64{}
	offs := map[int32]kgo.Offset{}
	ends.Each(func(o kadm.ListedOffset) {
		if o.Offset > 0 {
			want[o.Partition] = o.Offset
			offs[o.Partition] = kgo.NewOffset().AtStart()
		}
	})
	if len(want) == 0 {
		return 0, false, nil
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...),
		kgo.ConsumePartitions(map[string]map[int32]kgo.Offset{topic: offs}), kgo.FetchMaxBytes(64<<20))
	if err != nil {
		return 0, false, err
	}
	defer cl.Close()
	n, found := 0, false
	for len(want) > 0 {
		fs := cl.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			return n, found, fmt.Errorf("read %s: %w (%d records so far)", topic, err, n)
		}
		var ferr error
		fs.EachError(func(_ string, _ int32, err error) { ferr = errors.Join(ferr, err) })
		if ferr != nil {
			return n, found, ferr
		}
		fs.EachRecord(func(r *kgo.Record) {
			n++
			if !found && string(r.Key) == probe {
				found = true
			}
			if end, ok := want[r.Partition]; ok && r.Offset >= end-1 {
				delete(want, r.Partition)
			}
		})
	}
	return n, found, nil
}
