// Command fluxstream-sink-webhook is the example webhook sink plugin. Build
// it, then point a `plugin` sink at it:
//
//	go build -o /usr/libexec/fluxstream/webhook ./plugins/examples/webhook/cmd/fluxstream-sink-webhook
//	sha256sum /usr/libexec/fluxstream/webhook
package main

import (
	"github.com/fluxstream/fluxstream/plugins/examples/webhook"
	"github.com/fluxstream/fluxstream/plugins/sdk"
)

func main() { sdk.ServeSink(&webhook.Sink{}) }
