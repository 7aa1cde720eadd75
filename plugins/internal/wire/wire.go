// Package wire holds what the host and the Go SDK must agree on besides the
// generated protocol: the go-plugin handshake, the name the plugin is
// dispensed under and message size limits. The Python SDK repeats these
// values (fluxstream_plugin/_wire.py); a test checks they match.
package wire

import (
	"context"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/fluxstream/fluxstream/plugins/internal/sinkv1"
)

// ProtocolVersion is the sink plugin protocol version (the go-plugin
// application protocol version, and package fluxstream.sink.v1). It is a
// variable only so that tests can build a plugin that speaks another one.
var ProtocolVersion uint = 1

// Magic cookie: a plugin refuses to run without it (so that starting it by
// hand says what it is), and the host refuses plugins built for another
// program, which expect another cookie.
const (
	MagicCookieKey   = "FLUXSTREAM_PLUGIN"
	MagicCookieValue = "sink-2b0e6f3c9d1a4e57"
)

// PluginName is the name the sink is served and dispensed under.
const PluginName = "sink"

// EnvHostPID names the variable through which the host tells the plugin
// its pid: the plugin exits when its parent is no longer that process.
const EnvHostPID = "FLUXSTREAM_PLUGIN_HOST_PID"

// MaxMessageBytes bounds one gRPC message either way: a Write request the
// host sends (it splits bigger batches) and the answer it takes.
const MaxMessageBytes = 64 << 20

// WindowBytes is the HTTP/2 flow-control window both sides start with:
// a whole batch fits, so a Write is not a series of 64KiB round trips.
const WindowBytes = 16 << 20

// BufferBytes is the size of gRPC's read and write buffers.
const BufferBytes = 1 << 20

// Handshake is the go-plugin handshake config for the current version.
func Handshake() plugin.HandshakeConfig {
	return plugin.HandshakeConfig{
		ProtocolVersion:  ProtocolVersion,
		MagicCookieKey:   MagicCookieKey,
		MagicCookieValue: MagicCookieValue,
	}
}

// Plugin is the go-plugin side of the sink: the SDK serves Impl, the host
// dispenses a sinkv1.SinkClient.
type Plugin struct {
	plugin.NetRPCUnsupportedPlugin
	Impl sinkv1.SinkServer // plugin side only
}

var _ plugin.GRPCPlugin = (*Plugin)(nil)

// GRPCServer registers the sink service.
func (p *Plugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	sinkv1.RegisterSinkServer(s, p.Impl)
	return nil
}

// GRPCClient returns a sinkv1.SinkClient on the connection.
func (p *Plugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, c *grpc.ClientConn) (any, error) {
	return sinkv1.NewSinkClient(c), nil
}
