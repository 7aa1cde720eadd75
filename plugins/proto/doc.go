// Package proto holds the versioned sink plugin protocol
// (fluxstream/sink/v1/sink.proto). The generated Go code lives in
// plugins/internal/sinkv1, the Python code in the Python SDK.
package proto

//go:generate ./generate.sh
