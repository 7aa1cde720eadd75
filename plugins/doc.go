// Package plugins holds fluxstream's sink plugins over gRPC: the versioned
// protocol (proto), the Go SDK for authors (sdk), the Python SDK
// (sdk/python), the `plugin` sink type (host) and examples. See README.md.
package plugins
