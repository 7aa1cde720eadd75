// Package where is the `where` transform: it keeps the records for which
// an expression (expr-lang/expr, over a typed view of the record) is true
// and drops the others (a dropped record counts as delivered).
package where

import (
	"context"
	_ "embed"
	"errors"

	"github.com/fluxstream/fluxstream/core"
)

// Sample is the sample config.
//
//go:embed sample.yaml
var Sample string

// Register adds the where transform to r.
func Register(r *core.Registry) {
	r.RegisterTransform("where", "keep the records for which an expression is true", New)
}

// Config is the transform's config.
type Config struct {
	// Expr is a boolean expression over the record (README).
	Expr string `yaml:"expr"`
	// MaxNodes bounds the expression's size.
	MaxNodes int `yaml:"max_nodes"`

	prog *Program
}

// Validate compiles the expression.
func (c *Config) Validate() error {
	if c.MaxNodes <= 0 {
		return core.Fieldf("max_nodes", "must be positive")
	}
	if c.Expr == "" {
		return core.Fieldf("expr", "give an expression, e.g. event.name == \"clean\"")
	}
	p, err := Compile(c.Expr, c.MaxNodes)
	if err != nil {
		return ExprError("expr", err)
	}
	c.prog = p
	return nil
}

// Transform keeps matching records.
type Transform struct {
	cfg   Config
	progs []*Program
	ev    *Evaluator
}

var _ core.Transform = (*Transform)(nil)

// New decodes and compiles.
func New(nc *core.NodeConfig) (any, error) {
	t := &Transform{cfg: Config{MaxNodes: DefaultMaxNodes}}
	if err := nc.Decode(&t.cfg); err != nil {
		return nil, err
	}
	if t.cfg.prog == nil {
		return nil, errors.New("where: no program") // Decode runs Validate
	}
	t.progs = []*Program{t.cfg.prog}
	t.ev = NewEvaluator(t.progs...)
	return t, nil
}

// Process passes r on (itself: it is not changed) when the expression is
// true, and drops it otherwise.
func (t *Transform) Process(_ context.Context, r *core.Record) ([]*core.Record, error) {
	keep := false
	if err := t.ev.Eval(r, t.progs, func(_ int, ok bool) { keep = ok }); err != nil {
		return nil, err
	}
	if !keep {
		return nil, nil
	}
	return []*core.Record{r}, nil
}
