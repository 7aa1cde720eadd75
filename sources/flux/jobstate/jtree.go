package jobstate

// An ordered JSON object tree for the few edits Flux makes to JSON
// documents: jobspec-update (jpath_set), resource-update on R, memo merges
// and null clearing on annotations (jpath_update, jpath_clear_null, all in
// flux-core src/common/libutil/jpath.c). Objects keep member order, as
// jansson does, so an edited jobspec prints like Flux prints it; any other
// value stays the raw bytes it was read from.

import (
	"errors"
	"strings"
)

type node struct {
	obj   []member // members, when isObj
	isObj bool
	raw   []byte // the value, when not an object
}

type member struct {
	key string
	val *node
}

// parseTree builds a tree from a validated JSON value.
func parseTree(v []byte) (*node, error) {
	if kindOf(v) != '{' {
		return &node{raw: v}, nil
	}
	n := &node{isObj: true}
	it := objIter{b: v, trusted: true}
	if err := it.open(); err != nil {
		return nil, err
	}
	for {
		k, val, ok, err := it.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			return n, nil
		}
		c, err := parseTree(val)
		if err != nil {
			return nil, err
		}
		n.set(k.String(), c) // a duplicate key replaces, as in jansson
	}
}

func newObject() *node { return &node{isObj: true} }

func (n *node) isNull() bool { return !n.isObj && isNull(n.raw) }

func (n *node) get(key string) *node {
	for i := range n.obj {
		if n.obj[i].key == key {
			return n.obj[i].val
		}
	}
	return nil
}

// set replaces the member in place or appends it (jansson's
// json_object_set keeps the position of an existing key).
func (n *node) set(key string, v *node) {
	for i := range n.obj {
		if n.obj[i].key == key {
			n.obj[i].val = v
			return
		}
	}
	n.obj = append(n.obj, member{key, v})
}

func (n *node) del(key string) {
	for i := range n.obj {
		if n.obj[i].key == key {
			n.obj = append(n.obj[:i], n.obj[i+1:]...)
			return
		}
	}
}

// appendJSON appends the compact JSON form of n.
func (n *node) appendJSON(dst []byte) []byte {
	if !n.isObj {
		return append(dst, n.raw...)
	}
	dst = append(dst, '{')
	for i, m := range n.obj {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendQuoted(dst, m.key)
		dst = append(dst, ':')
		dst = m.val.appendJSON(dst)
	}
	return append(dst, '}')
}

func (n *node) bytes() []byte { return n.appendJSON(nil) }

var errPath = errors.New("invalid path")

// setPath sets the value at a period-delimited path, creating missing
// intermediate objects and replacing what is there (jpath_set). It fails
// on an empty path component or when an intermediate value is not an
// object.
func setPath(root *node, path string, v *node) error {
	cur := root
	for {
		if !cur.isObj {
			return errPath
		}
		head, rest, more := strings.Cut(path, ".")
		if head == "" {
			return errPath
		}
		if !more {
			cur.set(head, v)
			return nil
		}
		next := cur.get(head)
		if next == nil {
			next = newObject()
			cur.set(head, next)
		}
		cur, path = next, rest
	}
}

// updatePath merges v into the value at path (jpath_update): a missing
// value is set; an existing one is updated member by member, recursing
// into objects.
func updatePath(root *node, path string, v *node) error {
	head, rest, more := strings.Cut(path, ".")
	if head == "" || !root.isObj {
		return errPath
	}
	if more {
		next := root.get(head)
		if next == nil {
			next = newObject()
			root.set(head, next)
		}
		return updatePath(next, rest, v)
	}
	if cur := root.get(head); cur != nil && cur.isObj && v.isObj {
		mergeInto(cur, v)
		return nil
	}
	root.set(head, v)
	return nil
}

// mergeInto updates orig with the members of v, recursively for objects.
func mergeInto(orig, v *node) {
	for _, m := range v.obj {
		if m.val.isObj {
			o := orig.get(m.key)
			if o == nil || !o.isObj {
				o = newObject()
				orig.set(m.key, o)
			}
			mergeInto(o, m.val)
			continue
		}
		orig.set(m.key, m.val)
	}
}

// clearNull removes null members and members that are (or become) empty
// objects, recursively (jpath_clear_null).
func clearNull(n *node) {
	if !n.isObj {
		return
	}
	kept := n.obj[:0]
	for _, m := range n.obj {
		if m.val.isObj {
			clearNull(m.val)
			if len(m.val.obj) == 0 {
				continue
			}
		} else if m.val.isNull() {
			continue
		}
		kept = append(kept, m)
	}
	clear(n.obj[len(kept):])
	n.obj = kept
}

// clone copies the object structure (raw leaves are shared; they are
// never written).
func (n *node) clone() *node {
	if !n.isObj {
		return n
	}
	c := &node{isObj: true, obj: make([]member, len(n.obj))}
	for i, m := range n.obj {
		c.obj[i] = member{m.key, m.val.clone()}
	}
	return c
}
