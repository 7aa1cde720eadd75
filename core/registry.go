package core

import (
	"fmt"
	"sort"
	"sync"
)

// Module describes one component type: a kind, a type name and a
// constructor that decodes the node's config (with nc.Decode) and returns a
// Source, Transform or Sink. Constructors must not open connections or
// files; that belongs in Provision.
type Module struct {
	Kind    string // KindSource, KindTransform or KindSink
	Type    string // the `type:` value in the config
	Summary string // one line for `fluxstream --help` style listings
	New     func(nc *NodeConfig) (any, error)
}

// Registry maps component types to modules. It is a value, not a global:
// the CLI builds one with every built-in, tests build their own.
type Registry struct {
	mu      sync.RWMutex
	modules map[string]map[string]Module // kind -> type -> module
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{modules: map[string]map[string]Module{}}
}

// Register adds a module; registering a kind/type twice is an error.
func (r *Registry) Register(m Module) error {
	switch m.Kind {
	case KindSource, KindTransform, KindSink:
	default:
		return fmt.Errorf("register %q: unknown kind %q", m.Type, m.Kind)
	}
	if m.Type == "" || m.New == nil {
		return fmt.Errorf("register %s: type and constructor are required", m.Kind)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	byType := r.modules[m.Kind]
	if byType == nil {
		byType = map[string]Module{}
		r.modules[m.Kind] = byType
	}
	if _, dup := byType[m.Type]; dup {
		return fmt.Errorf("register %s %q: already registered", m.Kind, m.Type)
	}
	byType[m.Type] = m
	return nil
}

// MustRegister is Register that panics, for init-time wiring of built-ins.
func (r *Registry) MustRegister(m Module) {
	if err := r.Register(m); err != nil {
		panic(err)
	}
}

// RegisterSource registers a source constructor.
func (r *Registry) RegisterSource(typ, summary string, newFn func(nc *NodeConfig) (Source, error)) {
	r.MustRegister(Module{Kind: KindSource, Type: typ, Summary: summary, New: func(nc *NodeConfig) (any, error) { return newFn(nc) }})
}

// RegisterTransform registers a transform constructor (a Transform or a
// Router).
func (r *Registry) RegisterTransform(typ, summary string, newFn func(nc *NodeConfig) (any, error)) {
	r.MustRegister(Module{Kind: KindTransform, Type: typ, Summary: summary, New: newFn})
}

// RegisterSink registers a sink constructor.
func (r *Registry) RegisterSink(typ, summary string, newFn func(nc *NodeConfig) (Sink, error)) {
	r.MustRegister(Module{Kind: KindSink, Type: typ, Summary: summary, New: func(nc *NodeConfig) (any, error) { return newFn(nc) }})
}

// Lookup finds a module.
func (r *Registry) Lookup(kind, typ string) (Module, bool) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	m, ok := r.modules[kind][typ]
	return m, ok
}

// Modules lists the modules of a kind, sorted by type.
func (r *Registry) Modules(kind string) []Module {
	r.mu.RLock()
	defer r.mu.RUnlock()
	out := make([]Module, 0, len(r.modules[kind]))
	for _, m := range r.modules[kind] {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Type < out[j].Type })
	return out
}

func (r *Registry) types(kind string) []string {
	var out []string
	for _, m := range r.Modules(kind) {
		out = append(out, m.Type)
	}
	return out
}
