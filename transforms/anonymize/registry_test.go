package anonymize

import (
	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/sinks/file"
	"github.com/fluxstream/fluxstream/sources/replay"
	"github.com/fluxstream/fluxstream/transforms/avro"
)

// builtinRegistry is what the end-to-end benchmark needs (the package
// cannot import internal/builtin, which imports it).
func builtinRegistry() *core.Registry {
	r := core.NewRegistry()
	replay.Register(r)
	Register(r)
	avro.Register(r)
	file.Register(r)
	return r
}
