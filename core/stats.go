package core

import "sync/atomic"

// NodeStats counts what passed through a node. Metrics exporters read it.
type NodeStats struct {
	In      atomic.Int64 // records received
	Out     atomic.Int64 // records emitted (sources, transforms) or delivered (sinks)
	Dropped atomic.Int64 // records a transform dropped on purpose
	Errors  atomic.Int64 // records that hit an error
}

// SinkStats adds what only sinks have.
type SinkStats struct {
	NodeStats
	Retries       atomic.Int64 // failed Write attempts that were retried
	DeadLettered  atomic.Int64 // records the destination refused for good
	BufferDropped atomic.Int64 // records given up by when_full: drop_oldest
}

// StatsSnapshot is a plain copy of the counters of one node.
type StatsSnapshot struct {
	Node, Kind                   string
	In, Out, Dropped, Errors     int64
	Retries, DeadLettered        int64
	BufferDropped                int64
	PendingRecords, PendingBytes int64
}
