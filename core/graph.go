package core

import (
	"fmt"
	"io"
	"strings"
)

// WriteDOT writes the DAG in Graphviz DOT.
func (g *Graph) WriteDOT(w io.Writer) error {
	var b strings.Builder
	b.WriteString("digraph fluxstream {\n  rankdir=LR;\n")
	shapes := map[string]string{KindSource: "invhouse", KindTransform: "box", KindSink: "house"}
	for _, n := range g.Nodes {
		fmt.Fprintf(&b, "  %q [label=\"%s\\n(%s %s)\", shape=%s];\n", n.Name, n.Name, n.Kind, n.Type, shapes[n.Kind])
	}
	for _, n := range g.Nodes {
		for _, e := range n.InputEdges {
			if e.Output == "" {
				fmt.Fprintf(&b, "  %q -> %q;\n", e.From.Name, n.Name)
			} else {
				fmt.Fprintf(&b, "  %q -> %q [label=%q];\n", e.From.Name, n.Name, e.Output)
			}
		}
	}
	b.WriteString("}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteMermaid writes the DAG as a Mermaid flowchart.
func (g *Graph) WriteMermaid(w io.Writer) error {
	var b strings.Builder
	b.WriteString("flowchart LR\n")
	ids := map[*Node]string{}
	for i, n := range g.Nodes {
		id := fmt.Sprintf("n%d", i)
		ids[n] = id
		label := fmt.Sprintf("%s<br/><i>%s %s</i>", n.Name, n.Kind, n.Type)
		switch n.Kind {
		case KindSource:
			fmt.Fprintf(&b, "  %s[/\"%s\"/]\n", id, label)
		case KindSink:
			fmt.Fprintf(&b, "  %s[(\"%s\")]\n", id, label)
		default:
			fmt.Fprintf(&b, "  %s[\"%s\"]\n", id, label)
		}
	}
	for _, n := range g.Nodes {
		for _, e := range n.InputEdges {
			if e.Output == "" {
				fmt.Fprintf(&b, "  %s --> %s\n", ids[e.From], ids[n])
			} else {
				fmt.Fprintf(&b, "  %s -- %s --> %s\n", ids[e.From], e.Output, ids[n])
			}
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
