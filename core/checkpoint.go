package core

import (
	"context"
	"fmt"
	"log/slog"
	"sort"
	"strings"
)

// Exactly-once delivery moves a source's checkpoint out of state.db and
// into the one sink that reads the source: the sink writes the records
// and the checkpoint entries they change in one transaction of its
// destination (a Kafka transaction), so after a crash the destination
// holds a record exactly when the checkpoint says it was taken.

// CheckpointStager is a source whose checkpoint can be advanced by a sink,
// record by record, at the moment the sink chooses (the flux and replay
// sources).
type CheckpointStager interface {
	Source
	// StageCheckpoint marks recs (records of this source, as the sink
	// received them) as delivered, and commits every checkpoint change
	// not yet committed to the source's KV before it returns. It may be
	// called again for the same records.
	StageCheckpoint(recs []*Record) error
}

// CheckpointKeeper is a sink that keeps the checkpoint of its source in
// its destination, in the same transactions as the records.
type CheckpointKeeper interface {
	Sink
	// KeepsCheckpoint reports whether the sink, as configured, does
	// (kafka: exactly_once: true). Validation then checks that one source
	// feeds it, by one path, and feeds no other sink.
	KeepsCheckpoint() bool
	// OpenCheckpoint loads the checkpoint of the source node named source
	// from the destination and returns it as the source's KV: Commit
	// stages writes, which the sink's next transaction carries. The
	// runtime calls it before it provisions the source; the sink calls
	// src.StageCheckpoint in each transaction. log is the sink's logger.
	OpenCheckpoint(ctx context.Context, source string, src CheckpointStager, log *slog.Logger) (KV, error)
}

// keeperOf finds, for every source, the sink that keeps its checkpoint.
func keeperOf(g *Graph) map[*Node]*Node {
	out := map[*Node]*Node{}
	for _, sink := range g.Sinks() {
		if k, ok := sink.Impl.(CheckpointKeeper); ok && k.KeepsCheckpoint() {
			for _, src := range upstreamSources(sink) {
				out[src] = sink
			}
		}
	}
	return out
}

// sourceState is the KV of source n: its keeper's store, or state.db.
func (p *Pipeline) sourceState(ctx context.Context, n *Node, keepers map[*Node]*Node) (KV, error) {
	sink := keepers[n]
	if sink == nil {
		return p.state.Node(n.Name), nil
	}
	src, ok := n.Impl.(CheckpointStager)
	if !ok { // refused by Build; kept for graphs built by hand
		return nil, fmt.Errorf("sink %s keeps the checkpoint of %s, which cannot stage one", sink.Name, n.Name)
	}
	kv, err := sink.Impl.(CheckpointKeeper).OpenCheckpoint(ctx, n.Name, src, p.rt[sink].log)
	if err != nil {
		return nil, fmt.Errorf("sink %s: checkpoint of source %s: %w", sink.Name, n.Name, err)
	}
	p.rt[sink].log.Info("checkpoint of the source kept in the sink's transactions (exactly-once)", "source", n.Name, "store", describeKV(kv))
	return kv, nil
}

func describeKV(kv KV) string {
	if s, ok := kv.(fmt.Stringer); ok {
		return s.String()
	}
	return fmt.Sprintf("%T", kv)
}

// upstreamSources lists the sources whose records can reach n.
func upstreamSources(n *Node) []*Node {
	seen := map[*Node]bool{}
	var out []*Node
	var walk func(n *Node)
	walk = func(n *Node) {
		if seen[n] {
			return
		}
		seen[n] = true
		if n.Kind == KindSource {
			out = append(out, n)
		}
		for _, e := range n.InputEdges {
			walk(e.From)
		}
	}
	walk(n)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// pathsToSinks counts, per sink, the paths records of n take to it.
func pathsToSinks(n *Node, into map[*Node]int) {
	if n.Kind == KindSink {
		into[n]++
		return
	}
	for _, cs := range n.Consumers {
		for _, c := range cs {
			pathsToSinks(c, into)
		}
	}
}

// checkKeepers refuses graphs in which a checkpoint-keeping sink cannot
// give its guarantee: it must read exactly one source, one that can stage
// its checkpoint, by exactly one path, and that source must feed no other
// sink (the checkpoint would advance when this sink commits, whatever the
// others hold). Nodes that failed to build are skipped.
func checkKeepers(nodes []*Node) ConfigErrors {
	var errs ConfigErrors
	for _, sink := range nodes {
		k, ok := sink.Impl.(CheckpointKeeper)
		if sink.Kind != KindSink || !ok || !k.KeepsCheckpoint() {
			continue
		}
		at := func(format string, args ...any) {
			errs = append(errs, sink.Errorf("exactly_once", "exactly_once: "+format, args...))
		}
		// The checkpoint may advance only in the sink's transaction: a
		// disk spool acknowledges records once spooled, and drop_oldest
		// acknowledges records it drops.
		if sink.Buffer.Type != "memory" {
			errs = append(errs, sink.Errorf("buffer.type", "exactly_once needs buffer: {type: memory}: a disk spool acknowledges records to the source once spooled, before they are in the sink's transaction"))
		}
		if sink.Buffer.WhenFull == "drop_oldest" {
			errs = append(errs, sink.Errorf("buffer.when_full", "exactly_once cannot drop records (when_full: block)"))
		}
		srcs := upstreamSources(sink)
		if len(srcs) != 1 {
			names := make([]string, len(srcs))
			for i, s := range srcs {
				names[i] = s.Name
			}
			at("the sink must read exactly one source (it keeps that source's checkpoint); it reads %d: %s", len(srcs), strings.Join(names, ", "))
			continue
		}
		src := srcs[0]
		if src.Impl == nil {
			continue
		}
		if _, ok := src.Impl.(CheckpointStager); !ok {
			at("source %s (type %s) has no checkpoint this sink can carry; exactly_once needs a flux or replay source", src.Name, src.Type)
			continue
		}
		paths := map[*Node]int{}
		pathsToSinks(src, paths)
		var others []string
		for n := range paths {
			if n != sink {
				others = append(others, n.Name)
			}
		}
		sort.Strings(others)
		if len(others) > 0 {
			at("source %s also feeds sink(s) %s: with exactly_once its checkpoint lives in this sink's transactions, so no other sink may read it (add a second source for them)", src.Name, strings.Join(others, ", "))
		}
		if paths[sink] > 1 {
			at("records of source %s reach this sink by %d paths; exactly_once needs one", src.Name, paths[sink])
		}
	}
	return errs
}
