package anonymize

import (
	"fmt"
	"strconv"

	"github.com/fluxstream/fluxstream/transforms/filter/recpath"
)

// editor anonymizes one of Flux's JSON values in a single pass: the walk
// notes edits (a value replaced, a member removed) in source order, and
// the bytes between them are copied through as they are. JSON no rule
// changes costs one scan and no allocation, and comes back as the very
// same bytes.
type editor struct {
	recpath.Edits
	t   *Transform
	src []byte
	upd root // jobspec-update: the context rules' start
}

// edit returns src anonymized from start, or src itself when nothing
// changes. update reads src as a jobspec-update context.
func (t *Transform) edit(src []byte, start root, update bool) ([]byte, error) {
	i := recpath.SkipWS(src, 0)
	if i >= len(src) {
		return nil, syntaxAt(i)
	}
	e := editor{Edits: recpath.NewEdits(src), t: t, src: src, upd: start}
	var end int
	var err error
	switch {
	case update && src[i] == '{':
		end, err = e.object(i, start.st, start.match, true)
	case start.match >= 0 && t.rules[start.match].Action == Drop:
		return nil, nil
	default:
		end, err = e.value(i, start.st, start.match)
	}
	if err != nil {
		return nil, err
	}
	if j := recpath.SkipWS(src, end); j != len(src) {
		return nil, fmt.Errorf("%w at byte %d: more after the value", recpath.ErrSyntax, j)
	}
	return e.Result(), nil
}

func (e *editor) drops(m int) bool { return m >= 0 && e.t.rules[m].Action == Drop }

// value walks the value at src[i] under rule cur (-1: none yet) with
// the patterns of st alive below it, and returns the index past it.
func (e *editor) value(i int, st recpath.State, cur int) (int, error) {
	src := e.src
	if st.Empty() && (cur < 0 || e.t.rules[cur].Action == Keep) {
		return recpath.SkipValue(src, i) // nothing below here changes
	}
	switch src[i] {
	case '{':
		return e.object(i, st, cur, false)
	case '[':
		return e.array(i, st, cur)
	case '"':
		end, esc, err := recpath.StringEnd(src, i)
		if err != nil || cur < 0 {
			return end, err
		}
		s := keyString(src[i+1 : end-1]) // apply copies what it keeps
		if esc {
			if s, err = recpath.Unquote(src[i:end], true); err != nil {
				return 0, err
			}
		}
		if v := e.t.apply(e.t.rules[cur], cur, s); v != s {
			e.Cut(i, end)
			e.Set(recpath.AppendQuote(e.Out(), v))
		}
		return end, nil
	}
	end, err := recpath.SkipValue(src, i)
	if err != nil {
		return 0, err
	}
	if c := src[i]; c != 't' && c != 'f' && c != 'n' && cur >= 0 && e.t.rules[cur].Action == Hash {
		// A number: a pseudonymous integer.
		id := e.t.PseudoID(keyString(src[i:end])) // PseudoID keeps nothing
		e.Cut(i, end)
		e.Set(strconv.AppendUint(e.Out(), uint64(id), 10))
	}
	return end, nil
}

// object walks the object at src[i] ('{'). update: its keys are
// jobspec paths (a jobspec-update context).
func (e *editor) object(i int, st recpath.State, cur int, update bool) (int, error) {
	src := e.src
	i = recpath.SkipWS(src, i+1)
	if i < len(src) && src[i] == '}' {
		return i + 1, nil
	}
	sep := i // where this member's leading separator starts
	kept, dropped := 0, 0
	for {
		if i >= len(src) || src[i] != '"' {
			return 0, syntaxAt(i)
		}
		ke, esc, err := recpath.StringEnd(src, i)
		if err != nil {
			return 0, err
		}
		k := keyString(src[i+1 : ke-1])
		if esc {
			if k, err = recpath.Unquote(src[i:ke], true); err != nil {
				return 0, err
			}
		}
		var next recpath.State
		var m int
		switch {
		case update:
			next, m = e.updateStep(k)
		case st.Empty(): // below a rule, no deeper one
			m = cur
		default:
			if next, m = e.t.set.Step(st, k); m < 0 {
				m = cur
			}
		}
		j := recpath.SkipWS(src, ke)
		if j >= len(src) || src[j] != ':' {
			return 0, syntaxAt(j)
		}
		vs := recpath.SkipWS(src, j+1)
		if vs >= len(src) {
			return 0, syntaxAt(vs)
		}
		var ve int
		if ve, err = e.member(sep, i, vs, next, m, kept, dropped); err != nil {
			return 0, err
		}
		if e.drops(m) {
			dropped++
		} else {
			kept++
		}
		var end int
		if i, end, err = e.nextMember(ve, '}'); err != nil || end > 0 {
			return end, err
		}
		sep = ve
	}
}

// array walks the array at src[i] ('[').
func (e *editor) array(i int, st recpath.State, cur int) (int, error) {
	src := e.src
	i = recpath.SkipWS(src, i+1)
	if i < len(src) && src[i] == ']' {
		return i + 1, nil
	}
	sep := i
	kept, dropped := 0, 0
	for n := 0; ; n++ {
		if i >= len(src) {
			return 0, syntaxAt(i)
		}
		next, m := st, cur
		if !st.Empty() {
			if next, m = e.t.set.Step(st, recpath.Index(n)); m < 0 {
				m = cur
			}
		}
		ve, err := e.member(sep, i, i, next, m, kept, dropped)
		if err != nil {
			return 0, err
		}
		if e.drops(m) {
			dropped++
		} else {
			kept++
		}
		var end int
		if i, end, err = e.nextMember(ve, ']'); err != nil || end > 0 {
			return end, err
		}
		sep = ve
	}
}

// nextMember reads what follows a member that ends at ve, in a container
// that close ends: the start of the next member, or the end of the
// container (end > 0).
func (e *editor) nextMember(ve int, close byte) (next, end int, err error) {
	j := recpath.SkipWS(e.src, ve)
	switch {
	case j >= len(e.src):
		return 0, 0, syntaxAt(j)
	case e.src[j] == ',':
		return recpath.SkipWS(e.src, j+1), 0, nil
	case e.src[j] == close:
		return 0, j + 1, nil
	}
	return 0, 0, syntaxAt(j)
}

// member walks one member (or element) whose separator starts at sep,
// itself at start and its value at vs. A dropped one goes with the
// separator before it; when it was the first, the separator after it
// goes with the next one kept.
func (e *editor) member(sep, start, vs int, st recpath.State, m, kept, dropped int) (int, error) {
	if e.drops(m) {
		ve, err := recpath.SkipValue(e.src, vs)
		if err != nil {
			return 0, err
		}
		e.Cut(sep, ve)
		return ve, nil
	}
	if kept == 0 && dropped > 0 {
		e.Cut(sep, start) // the first one kept: no separator before it
	}
	return e.value(vs, st, m)
}

// updateStep steps past a jobspec-update key: a dotted jobspec path
// ("attributes.system.cwd") whose value follows the jobspec rules, and
// the context.jobspec-update rules apply too.
func (e *editor) updateStep(k string) (recpath.State, int) {
	t := e.t
	n1, m1 := t.set.StepPath(t.js.st, k)
	if m1 < 0 {
		m1 = t.js.match
	}
	n2, m2 := t.set.Step(e.upd.st, k)
	if m2 < 0 {
		m2 = e.upd.match
	}
	m := m1
	if m < 0 || (m2 >= 0 && t.set.Rank(m2) < t.set.Rank(m1)) {
		m = m2
	}
	for w := range n1 {
		n1[w] |= n2[w]
	}
	return n1, m
}

func syntaxAt(i int) error { return fmt.Errorf("%w at byte %d", recpath.ErrSyntax, i) }
