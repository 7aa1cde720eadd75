// Package builtin wires every component shipped with fluxstream into a
// registry.
package builtin

import (
	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/plugins/host"
	"github.com/fluxstream/fluxstream/sinks/elasticsearch"
	"github.com/fluxstream/fluxstream/sinks/file"
	"github.com/fluxstream/fluxstream/sinks/jobdb"
	"github.com/fluxstream/fluxstream/sinks/kafka"
	"github.com/fluxstream/fluxstream/sinks/stdout"
	"github.com/fluxstream/fluxstream/sources/flux"
	kafkasource "github.com/fluxstream/fluxstream/sources/kafka"
	"github.com/fluxstream/fluxstream/sources/replay"
	"github.com/fluxstream/fluxstream/transforms/anonymize"
	"github.com/fluxstream/fluxstream/transforms/avro"
	"github.com/fluxstream/fluxstream/transforms/filter"
	"github.com/fluxstream/fluxstream/transforms/route"
	"github.com/fluxstream/fluxstream/transforms/where"
)

// Registry returns a registry with every built-in component.
func Registry() *core.Registry {
	r := core.NewRegistry()
	flux.Register(r)
	replay.Register(r)
	kafkasource.Register(r)
	avro.Register(r)
	anonymize.Register(r)
	filter.Register(r)
	where.Register(r)
	route.Register(r)
	file.Register(r)
	elasticsearch.Register(r)
	jobdb.Register(r)
	kafka.Register(r)
	stdout.Register(r)
	host.Register(r)
	return r
}
