package recpath

import "unsafe"

// Pruner removes what an exclude set matches, and with an include set
// keeps only what it matches, from raw JSON. Containers an include left
// empty are removed; containers an exclude emptied stay ({} or []).
type Pruner struct {
	Include *Set // nil: keep everything not excluded
	Exclude *Set // may be nil
}

// Start is where a walk stands at a raw subtree: the states after its
// path, and whether an include pattern already matched above.
type Start struct {
	Inc, Exc State
	KeepAll  bool
}

// Untouched reports whether s leaves the subtree as it is.
func (s Start) Untouched() bool { return s.KeepAll && s.Exc.Empty() }

// Prune returns the pruned form of the value src, in one pass: what is
// removed is cut out and the rest copied through as it is; src itself
// when nothing is removed. kept is false when an include kept nothing of
// it.
func (p *Pruner) Prune(src []byte, s Start) (out []byte, kept bool, err error) {
	i := SkipWS(src, 0)
	if i >= len(src) {
		return nil, false, syntaxAt(i)
	}
	w := pruneWalk{p: p, Edits: NewEdits(src)}
	end, kept, err := w.value(i, s.Inc, s.Exc, s.KeepAll)
	if err != nil {
		return nil, false, err
	}
	if j := SkipWS(src, end); j != len(src) {
		return nil, false, syntaxAt(j)
	}
	if !kept {
		return nil, false, nil
	}
	return w.Result(), true, nil
}

type pruneWalk struct {
	p *Pruner
	Edits
}

// keyString views key bytes as a string for matching only.
func keyString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

func (p *Pruner) step(inc, exc State, keepAll bool, key string) (State, State, bool, bool) {
	var incM, excM = -1, -1
	if !keepAll {
		inc, incM = p.Include.Step(inc, key)
	}
	if p.Exclude != nil {
		exc, excM = p.Exclude.Step(exc, key)
	}
	return inc, exc, excM >= 0, keepAll || incM >= 0
}

// value walks the value at src[i] and returns the index past it, and
// whether anything of it is kept.
func (w *pruneWalk) value(i int, inc, exc State, keepAll bool) (int, bool, error) {
	if !(keepAll && exc.Empty()) {
		switch w.src[i] {
		case '{':
			return w.container(i, inc, exc, keepAll, '}')
		case '[':
			return w.container(i, inc, exc, keepAll, ']')
		}
	}
	// Kept whole, or a scalar: kept whole or (include, nothing matched)
	// not at all.
	end, err := SkipValue(w.src, i)
	return end, keepAll, err
}

// container walks the object or array at src[i] (end: its closing
// byte). A member removed goes with the separator before it; when it was
// the first, the separator after it goes with the next one kept. A
// container an include left empty is not kept.
func (w *pruneWalk) container(i int, inc, exc State, keepAll bool, end byte) (int, bool, error) {
	src := w.src
	i = SkipWS(src, i+1)
	if i < len(src) && src[i] == end {
		return i + 1, keepAll, nil
	}
	sep := i // where this member's leading separator starts
	kept, removed := 0, 0
	for n := 0; ; n++ {
		start, vs := i, i
		var key string
		if end == '}' {
			if i >= len(src) || src[i] != '"' {
				return 0, false, syntaxAt(i)
			}
			ke, esc, err := StringEnd(src, i)
			if err != nil {
				return 0, false, err
			}
			key = keyString(src[i+1 : ke-1])
			if esc {
				if key, err = Unquote(src[i:ke], true); err != nil {
					return 0, false, err
				}
			}
			j := SkipWS(src, ke)
			if j >= len(src) || src[j] != ':' {
				return 0, false, syntaxAt(j)
			}
			vs = SkipWS(src, j+1)
		} else {
			key = Index(n)
		}
		if vs >= len(src) {
			return 0, false, syntaxAt(vs)
		}
		ci, ce, excluded, ck := w.p.step(inc, exc, keepAll, key)
		var ve int
		var err error
		if excluded || (!ck && ci.Empty()) {
			if ve, err = SkipValue(src, vs); err != nil {
				return 0, false, err
			}
			w.Cut(sep, ve)
			removed++
		} else {
			m := w.Mark()
			if kept == 0 && removed > 0 {
				w.Cut(sep, start) // the first one kept: no separator before it
			}
			var k bool
			if ve, k, err = w.value(vs, ci, ce, ck); err != nil {
				return 0, false, err
			}
			if k {
				kept++
			} else {
				w.Rollback(m)
				w.Cut(sep, ve)
				removed++
			}
		}
		j := SkipWS(src, ve)
		if j >= len(src) {
			return 0, false, syntaxAt(j)
		}
		switch src[j] {
		case ',':
			sep, i = ve, SkipWS(src, j+1)
		case end:
			return j + 1, kept > 0 || keepAll, nil
		default:
			return 0, false, syntaxAt(j)
		}
	}
}

// Step moves the pruner's states past key: the next states, whether an
// exclude pattern ends at key, and whether what is below key is kept
// whole (no include, or an include pattern ended at key or above).
func (p *Pruner) Step(inc, exc State, keepAll bool, key string) (State, State, bool, bool) {
	return p.step(inc, exc, keepAll, key)
}
