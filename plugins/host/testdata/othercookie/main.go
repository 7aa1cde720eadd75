// Command othercookie is a go-plugin gRPC plugin built for another
// program: it expects another magic cookie, so under fluxstream it
// refuses to run (go-plugin prints why on stderr and exits 1).
package main

import (
	"github.com/hashicorp/go-plugin"

	"github.com/fluxstream/fluxstream/plugins/internal/wire"
)

func main() {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: plugin.HandshakeConfig{ProtocolVersion: 1, MagicCookieKey: "BASIC_PLUGIN", MagicCookieValue: "hello"},
		Plugins:         plugin.PluginSet{wire.PluginName: &wire.Plugin{}},
		GRPCServer:      plugin.DefaultGRPCServer,
	})
}
