package core

import (
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Graph is a built, validated DAG: every node constructed from its config,
// every edge resolved.
type Graph struct {
	Config *Config
	Nodes  []*Node // topological order: sources, transforms, sinks
	byName map[string]*Node
}

// Node is one built node.
type Node struct {
	*NodeConfig
	Impl any // Source, Transform, Router or Sink
	// Consumers per output ("" is the default output).
	Consumers map[string][]*Node
	// InputEdges as resolved from the config.
	InputEdges []Edge
}

// Edge is one input of a node: a node and one of its outputs.
type Edge struct {
	From   *Node
	Output string
}

func (e Edge) String() string {
	if e.Output == "" {
		return e.From.Name
	}
	return e.From.Name + "." + e.Output
}

// Node returns the node with the given name.
func (g *Graph) Node(name string) *Node { return g.byName[name] }

// Sources, Sinks and Transforms list nodes of one kind in config order.
func (g *Graph) Sources() []*Node    { return g.ofKind(KindSource) }
func (g *Graph) Transforms() []*Node { return g.ofKind(KindTransform) }
func (g *Graph) Sinks() []*Node      { return g.ofKind(KindSink) }

func (g *Graph) ofKind(kind string) []*Node {
	var out []*Node
	for _, n := range g.Nodes {
		if n.Kind == kind {
			out = append(out, n)
		}
	}
	return out
}

// Warner is implemented by components whose config is valid but looks
// wrong (a path that can never match); validate prints the warnings.
type Warner interface {
	Warnings() []*ConfigError
}

// Warnings are the config's and every component's warnings.
func (g *Graph) Warnings() ConfigErrors {
	out := append(ConfigErrors(nil), g.Config.Warnings...)
	for _, n := range g.Nodes {
		if w, ok := n.Impl.(Warner); ok {
			out = append(out, w.Warnings()...)
		}
	}
	return out
}

// Build constructs every node with its module from reg and wires the DAG.
// It reports every problem at once: unknown types, bad node configs,
// unknown inputs, cycles, sinks or transforms without inputs, sources and
// transforms whose output goes nowhere.
func Build(cfg *Config, reg *Registry) (*Graph, error) {
	g := &Graph{Config: cfg, byName: map[string]*Node{}}
	errs := append(ConfigErrors(nil), cfg.problems...)
	var nodes []*Node
	for _, nc := range cfg.Nodes {
		n := &Node{NodeConfig: nc, Consumers: map[string][]*Node{}}
		g.byName[nc.Name] = n
		nodes = append(nodes, n)
		if nc.Type == "" {
			continue // already reported by LoadConfig
		}
		mod, ok := reg.Lookup(nc.Kind, nc.Type)
		if !ok {
			known := reg.types(nc.Kind)
			msg := fmt.Sprintf("unknown %s type %q (known: %s)", nc.Kind, nc.Type, strings.Join(known, ", "))
			if s := suggest(nc.Type, known); s != "" {
				msg = fmt.Sprintf("unknown %s type %q (did you mean %q? known: %s)", nc.Kind, nc.Type, s, strings.Join(known, ", "))
			}
			errs = append(errs, nc.Errorf("type", "%s", msg))
			continue
		}
		impl, err := mod.New(nc)
		if err != nil {
			if es, ok := AsConfigErrors(err); ok {
				errs = append(errs, es...)
			} else {
				errs = append(errs, nc.Errorf("", "%v", err))
			}
			continue
		}
		if err := checkImpl(nc, impl); err != nil {
			errs = append(errs, err)
			continue
		}
		n.Impl = impl
	}

	// Resolve inputs.
	for _, n := range nodes {
		if n.Kind == KindSource {
			continue
		}
		if len(n.Inputs) == 0 {
			errs = append(errs, n.Errorf("inputs", "a %s needs inputs: list the sources or transforms it reads", n.Kind))
		}
		seen := map[string]bool{}
		for _, in := range n.Inputs {
			if seen[in] {
				errs = append(errs, n.Errorf("inputs", "input %q is listed twice", in))
				continue
			}
			seen[in] = true
			name, output, _ := strings.Cut(in, ".")
			from := g.byName[name]
			switch {
			case from == nil:
				msg := fmt.Sprintf("unknown input %q", in)
				if s := suggest(name, nonSinkNames(nodes)); s != "" {
					msg += fmt.Sprintf(" (did you mean %q?)", s)
				}
				errs = append(errs, n.Errorf("inputs", "%s", msg))
				continue
			case from.Kind == KindSink:
				errs = append(errs, n.Errorf("inputs", "input %q is a sink; sinks have no output", in))
				continue
			case output != "":
				router, ok := from.Impl.(Router)
				if from.Impl != nil && (!ok || !slices.Contains(router.Outputs(), output)) {
					var outs []string
					if ok {
						outs = router.Outputs()
					}
					errs = append(errs, n.Errorf("inputs", "input %q: %s has no output %q (outputs: %s)", in, name, output, strings.Join(append([]string{name}, prefixed(name, outs)...), ", ")))
					continue
				}
			}
			n.InputEdges = append(n.InputEdges, Edge{From: from, Output: output})
			from.Consumers[output] = append(from.Consumers[output], n)
		}
	}

	for _, n := range nodes {
		if n.Kind == KindSink {
			continue
		}
		total := 0
		for _, c := range n.Consumers {
			total += len(c)
		}
		if total == 0 {
			errs = append(errs, n.Errorf("", "nothing reads this %s: add %q to the inputs of a transform or sink", n.Kind, n.Name))
		}
	}

	order, cycle := topoOrder(nodes)
	if cycle != nil {
		// The walk followed inputs; show the cycle in the direction data flows.
		names := make([]string, len(cycle))
		for i, n := range cycle {
			names[len(cycle)-1-i] = n.Name
		}
		errs = append(errs, cycle[0].Errorf("inputs", "cycle: %s", strings.Join(names, " -> ")))
	}
	if len(cfg.Nodes) > 0 && !slices.ContainsFunc(nodes, func(n *Node) bool { return n.Kind == KindSource }) {
		errs = append(errs, &ConfigError{File: cfg.File, Msg: "no sources: add one under sources:"})
	}
	if len(cfg.Nodes) == 0 {
		errs = append(errs, &ConfigError{File: cfg.File, Msg: "empty pipeline: add sources: and sinks:"})
	}
	if cycle == nil {
		errs = append(errs, checkKeepers(nodes)...)
	}
	if len(errs) > 0 {
		return nil, errs.sorted()
	}
	g.Nodes = order
	return g, nil
}

func checkImpl(nc *NodeConfig, impl any) *ConfigError {
	ok := false
	switch nc.Kind {
	case KindSource:
		_, ok = impl.(Source)
	case KindTransform:
		_, isT := impl.(Transform)
		_, isR := impl.(Router)
		ok = isT || isR
	case KindSink:
		_, ok = impl.(Sink)
	}
	if !ok {
		return nc.Errorf("type", "module %q does not implement a %s (%T)", nc.Type, nc.Kind, impl)
	}
	return nil
}

func nonSinkNames(nodes []*Node) []string {
	var out []string
	for _, n := range nodes {
		if n.Kind != KindSink {
			out = append(out, n.Name)
		}
	}
	return out
}

func prefixed(name string, outs []string) []string {
	r := make([]string, len(outs))
	for i, o := range outs {
		r[i] = name + "." + o
	}
	return r
}

// topoOrder sorts nodes so every node follows its inputs (sources first,
// sinks last, config order within a rank). On a cycle it returns one.
func topoOrder(nodes []*Node) ([]*Node, []*Node) {
	const (
		white = iota
		grey
		black
	)
	color := map[*Node]int{}
	var order []*Node
	var stack []*Node
	var cycle []*Node
	var visit func(n *Node) bool
	visit = func(n *Node) bool {
		switch color[n] {
		case grey:
			i := slices.Index(stack, n)
			cycle = append(slices.Clone(stack[i:]), n)
			return false
		case black:
			return true
		}
		color[n] = grey
		stack = append(stack, n)
		for _, e := range n.InputEdges {
			if !visit(e.From) {
				return false
			}
		}
		stack = stack[:len(stack)-1]
		color[n] = black
		order = append(order, n)
		return true
	}
	sorted := slices.Clone(nodes)
	rank := map[string]int{KindSource: 0, KindTransform: 1, KindSink: 2}
	sort.SliceStable(sorted, func(i, j int) bool { return rank[sorted[i].Kind] < rank[sorted[j].Kind] })
	for _, n := range sorted {
		if !visit(n) {
			return nil, cycle
		}
	}
	// Keep kinds grouped for stable, readable listings.
	sort.SliceStable(order, func(i, j int) bool { return rank[order[i].Kind] < rank[order[j].Kind] })
	return order, nil
}
