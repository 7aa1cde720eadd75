package core

import (
	"context"
	"io"
	"log/slog"
)

// Source produces records. Run blocks until ctx ends or the source is done
// (a finite replay), emitting batches through out. A source never drops
// what it read: it hands everything to Emit, which may block (backpressure).
type Source interface {
	Run(ctx context.Context, out Emitter) error
}

// Emitter takes a source's records into the DAG.
type Emitter interface {
	// Emit hands recs downstream. ack runs once, when every record has
	// reached every sink it is routed to durably (its spool, or the
	// destination for sinks without a disk spool), or was dropped by a
	// transform. Emit blocks while a downstream buffer with the "block"
	// policy is full; it returns ctx.Err() if ctx ends first.
	Emit(ctx context.Context, recs []*Record, ack func()) error
}

// Transform turns one record into zero or more records. It must not modify
// its input: change a Clone. The runtime keeps the acknowledgement lineage:
// a dropped record counts as delivered, each output inherits the input's.
// Transforms run inline in the source's goroutine and must be fast and
// free of I/O.
type Transform interface {
	Process(ctx context.Context, r *Record) ([]*Record, error)
}

// Sink delivers records to a destination.
type Sink interface {
	// Write delivers a batch. It returns nil once the destination
	// acknowledged every record. A non-nil error retries the batch (or, for
	// a *BatchError, only the records it names) with backoff; records are
	// never dropped for a transient error. Write is not called
	// concurrently.
	Write(ctx context.Context, batch []*Record) error
	// Close flushes and releases resources.
	Close(ctx context.Context) error
}

// Optional interfaces, in the style of Caddy's modules.

// Pipeliner is implemented by sinks that can have several batches on their
// way at once. Without it a sink delivers one batch per round trip to its
// destination; with it the runtime hands over the next batches while the
// destination still acknowledges earlier ones, and completes them in order.
type Pipeliner interface {
	// PipelineDepth is how many batches may be on their way at once; below
	// 2 the runtime calls Write only.
	PipelineDepth() int
	// Send hands the batch over without waiting for the destination's
	// acknowledgement and returns the wait for it, which reports what
	// Write would have returned. ok is false when the sink cannot take the
	// batch without blocking (its own queue is full): the runtime then
	// waits for everything sent before and delivers the batch with Write.
	// Send is called in batch order and never at the same time as another
	// Send or a Write; the waits are called in the order of their Sends.
	Send(ctx context.Context, batch []*Record) (wait func(context.Context) error, ok bool)
}

// BatchSizer is implemented by sinks whose destination wants another batch
// size than DefaultBatchRecords when batch.max_records is not set: a
// database that commits once a batch pays less a record in larger ones.
type BatchSizer interface {
	DefaultBatchRecords() int
}

// Provisioner is implemented by components that need set-up with the node's
// context (state directory, logger, name) before they run.
type Provisioner interface {
	Provision(ctx context.Context, nc NodeContext) error
}

// Validator is implemented by components that check their own config after
// decoding, beyond what the decoder enforces.
type Validator interface {
	Validate() error
}

// DryRunner is implemented by sinks that can describe what they would send
// without sending it. Sinks without it print each record's JSON form.
type DryRunner interface {
	DryRun(ctx context.Context, batch []*Record, w io.Writer) error
}

// Router is a transform that sends records, unchanged, to named outputs;
// downstream nodes read an output as "node.output", and "node" alone is the
// default output "". Implement it instead of Transform.
type Router interface {
	// Outputs lists the named outputs (not the default one).
	Outputs() []string
	// Route returns the outputs r leaves by; none drops it.
	Route(ctx context.Context, r *Record) ([]string, error)
}

// Preparer is implemented by sinks that must reach their destination before
// the pipeline starts (checks credentials, creates topics or indices). An
// error here aborts start-up with a clear message.
type Preparer interface {
	Prepare(ctx context.Context) error
}

// NodeContext is what the runtime gives a component.
type NodeContext struct {
	Name     string       // node name from the config
	Kind     string       // "source", "transform" or "sink"
	Logger   *slog.Logger // already labelled with the node
	StateDir string       // private directory for the node's durable state ("" in dry-run)
	State    KV           // durable key/value store for the node (checkpoints); nil in dry-run
	DryRun   bool
}

// KV is a node's durable key/value namespace. Writes are batched: they are
// durable once Commit returns.
type KV interface {
	Get(key []byte) ([]byte, error)
	// ForEach visits every key in order; fn must not retain k or v.
	ForEach(fn func(k, v []byte) error) error
	// Commit applies puts (nil value = delete) atomically and durably.
	Commit(puts []KVPut) error
}

// KVPut is one write of a Commit; a nil Value deletes the key.
type KVPut struct {
	Key, Value []byte
}
