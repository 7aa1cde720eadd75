package recpath

import "strings"

// Kind is what a node of the record contract holds.
type Kind int

const (
	Leaf   Kind = iota // a number, string or bool
	Object             // typed fields (Children)
	Raw                // Flux's own JSON, any shape below (jobspec, R, contexts, annotations)
	Array              // typed elements: Children[0] describes each one
)

// Node is one field of the record contract (schemas/record.md).
type Node struct {
	Name string
	Kind Kind
	// Required: the Avro form has no null for it while its parent is
	// there, so it cannot be removed on its own.
	//
	// The filter treats event and job as required too: sinks key and
	// order records by the job id (Kafka key, Elasticsearch _id) and the
	// event name and time; records without them (purges) keep lacking them.
	Required bool
	Children []*Node
}

func leaf(name string) *Node            { return &Node{Name: name} }
func req(name string) *Node             { return &Node{Name: name, Required: true} }
func raw(name string) *Node             { return &Node{Name: name, Kind: Raw} }
func obj(name string, c ...*Node) *Node { return &Node{Name: name, Kind: Object, Children: c} }

func reqAll(o *Node) *Node {
	for _, c := range o.Children {
		c.Required = true
	}
	return o
}

func event(name string) *Node {
	return obj(name, req("timestamp"), req("name"), raw("context"))
}

// Record is the contract's tree.
var Record = obj("",
	req("kind"), req("id"), leaf("cluster"), leaf("source"),
	func() *Node { e := event("event"); e.Required = true; return e }(),
	&Node{Name: "job", Kind: Object, Required: true, Children: []*Node{
		req("id"), req("jobid"), req("userid"), leaf("username"), req("urgency"), leaf("priority"),
		leaf("state"), leaf("result"), leaf("status"),
		leaf("name"), leaf("cwd"), leaf("queue"), leaf("project"), leaf("bank"),
		leaf("ntasks"), leaf("ncores"), leaf("nnodes"), leaf("duration"), leaf("expiration"),
		leaf("nodelist"), leaf("ranks"),
		leaf("success"), leaf("waitstatus"), leaf("returncode"),
		reqAll(obj("exception", leaf("occurred"), leaf("severity"), leaf("type"), leaf("note"))),
		leaf("t_submit"), leaf("t_depend"), leaf("t_priority"), leaf("t_sched"), leaf("t_run"),
		leaf("t_cleanup"), leaf("t_inactive"), leaf("runtime"),
		&Node{Name: "dependencies", Kind: Array, Children: []*Node{{Name: "*", Required: true}}},
		raw("annotations"), leaf("uri"),
		reqAll(obj("requested", leaf("nnodes"), leaf("nslots"), leaf("slot_cores"), leaf("slot_gpus"),
			leaf("ncores"), leaf("ngpus"), leaf("ntasks"), leaf("exclusive"), leaf("duration"))),
		obj("allocated", req("nnodes"), req("ncores"), req("ngpus"), leaf("ranks"), leaf("nodelist"),
			leaf("starttime"), leaf("expiration")),
	}},
	raw("jobspec"), raw("R"),
	&Node{Name: "eventlog", Kind: Array, Children: []*Node{func() *Node { e := event("*"); e.Required = true; return e }()}},
	obj("purge", req("id"), req("jobid"), req("reason"), leaf("time")),
	obj("invalid", req("error"), leaf("where"), leaf("raw")),
)

// Child returns the child named name.
func (n *Node) Child(name string) *Node {
	for _, c := range n.Children {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// Lookup finds the node of a dotted literal path ("job.exception.note");
// array elements are "*". Below a Raw node it returns the Raw node.
func (n *Node) Lookup(path string) *Node {
	for path != "" {
		if n.Kind == Raw {
			return n
		}
		seg, rest, _ := strings.Cut(path, ".")
		if n.Kind == Array {
			if !isIndexGlob(seg) {
				return nil
			}
			seg = "*"
		}
		if n = n.Child(seg); n == nil {
			return nil
		}
		path = rest
	}
	return n
}

// CanMatch reports whether p can match anything a record holds: a field
// of the contract, or anything below one of Flux's JSON objects.
func CanMatch(p Pattern) bool { return canMatch(Record, p.Segs) }

func canMatch(n *Node, segs []string) bool {
	if len(segs) == 0 {
		return true
	}
	switch n.Kind {
	case Raw:
		return true
	case Leaf:
		return false
	case Array:
		if !isIndexGlob(segs[0]) {
			return false
		}
		return canMatch(n.Children[0], segs[1:])
	}
	for _, c := range n.Children {
		if Glob(segs[0], c.Name) && canMatch(c, segs[1:]) {
			return true
		}
	}
	return false
}

func isIndexGlob(s string) bool {
	if strings.Contains(s, "*") {
		return true
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return s != ""
}
