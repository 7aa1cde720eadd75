// Package route is the `route` transform: a Router that sends each record,
// unchanged, to every named output whose expression is true, and to the
// default output when none is. Downstream nodes read an output as
// `inputs: [NODE.NAME]`, the default one as `inputs: [NODE]`.
package route

import (
	"context"
	_ "embed"
	"errors"
	"regexp"
	"sort"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/transforms/where"
)

// Sample is the sample config.
//
//go:embed sample.yaml
var Sample string

// Register adds the route transform to r.
func Register(r *core.Registry) {
	r.RegisterTransform("route", "send records to named outputs by expression (NODE.NAME), the rest to the default output", New)
}

// Config is the transform's config.
type Config struct {
	// Routes maps an output name to a boolean expression (the where
	// transform's language).
	Routes   map[string]string `yaml:"routes"`
	MaxNodes int               `yaml:"max_nodes"`

	names []string
	progs []*where.Program
}

var nameRe = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]*$`)

// Validate compiles every route.
func (c *Config) Validate() error {
	var errs []error
	if c.MaxNodes <= 0 {
		return core.Fieldf("max_nodes", "must be positive")
	}
	if len(c.Routes) == 0 {
		errs = append(errs, core.Fieldf("routes", "give at least one route: NAME: EXPRESSION"))
	}
	c.names, c.progs = nil, nil
	names := make([]string, 0, len(c.Routes))
	for n := range c.Routes {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		key := "routes." + n
		if !nameRe.MatchString(n) {
			errs = append(errs, core.Fieldf(key, "route names start with a letter and hold only letters, digits, '_' and '-' (they are read as NODE.NAME)"))
			continue
		}
		p, err := where.Compile(c.Routes[n], c.MaxNodes)
		if err != nil {
			errs = append(errs, where.ExprError(key, err))
			continue
		}
		c.names = append(c.names, n)
		c.progs = append(c.progs, p)
	}
	return errors.Join(errs...)
}

// Router routes records.
type Router struct {
	cfg   Config
	ev    *where.Evaluator
	one   [][]string // route i alone
	deflt []string
}

var _ core.Router = (*Router)(nil)

// New decodes and compiles.
func New(nc *core.NodeConfig) (any, error) {
	t := &Router{cfg: Config{MaxNodes: where.DefaultMaxNodes}, deflt: []string{""}}
	if err := nc.Decode(&t.cfg); err != nil {
		return nil, err
	}
	t.ev = where.NewEvaluator(t.cfg.progs...)
	for _, n := range t.cfg.names {
		t.one = append(t.one, []string{n})
	}
	return t, nil
}

// Outputs lists the route names.
func (t *Router) Outputs() []string { return append([]string(nil), t.cfg.names...) }

// Route returns every route whose expression is true, or the default
// output. The returned slice must not be changed.
func (t *Router) Route(_ context.Context, r *core.Record) ([]string, error) {
	first, n := -1, 0
	var many []string
	err := t.ev.Eval(r, t.cfg.progs, func(i int, ok bool) {
		if !ok {
			return
		}
		switch n++; n {
		case 1:
			first = i
		case 2:
			many = append(many, t.cfg.names[first], t.cfg.names[i])
		default:
			many = append(many, t.cfg.names[i])
		}
	})
	switch {
	case err != nil:
		return nil, err
	case n == 0:
		return t.deflt, nil
	case n == 1:
		return t.one[first], nil
	}
	return many, nil
}
