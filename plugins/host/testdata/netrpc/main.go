// Command netrpc is a go-plugin plugin with fluxstream's cookie that
// serves net/rpc instead of gRPC.
package main

import (
	"net/rpc"

	"github.com/hashicorp/go-plugin"

	"github.com/fluxstream/fluxstream/plugins/internal/wire"
)

type netrpcPlugin struct{}

func (netrpcPlugin) Server(*plugin.MuxBroker) (any, error) { return new(int), nil }
func (netrpcPlugin) Client(*plugin.MuxBroker, *rpc.Client) (any, error) {
	return nil, nil
}

func main() {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig: wire.Handshake(),
		Plugins:         plugin.PluginSet{wire.PluginName: netrpcPlugin{}},
	})
}
