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

// Prune appends the pruned form of the value src to dst. kept is false
// when an include kept nothing of it (dst is then unchanged).
func (p *Pruner) Prune(dst, src []byte, s Start) (out []byte, kept bool, err error) {
	i := SkipWS(src, 0)
	end, err := SkipValue(src, i)
	if err != nil {
		return dst, false, err
	}
	return p.value(dst, src[i:end], s.Inc, s.Exc, s.KeepAll)
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

// value prunes one whole value (src holds exactly it).
func (p *Pruner) value(dst, src []byte, inc, exc State, keepAll bool) ([]byte, bool, error) {
	if keepAll && exc.Empty() {
		return append(dst, src...), true, nil
	}
	mark := len(dst)
	switch src[0] {
	case '{':
		dst = append(dst, '{')
		n := 0
		_, err := EachMember(src, 0, func(key []byte, escaped bool, vs, ve int) error {
			k := keyString(key[1 : len(key)-1])
			if escaped {
				s, err := Unquote(key, true)
				if err != nil {
					return err
				}
				k = s
			}
			ci, ce, excluded, ck := p.step(inc, exc, keepAll, k)
			if excluded || (!ck && ci.Empty()) {
				return nil
			}
			m := len(dst)
			if n > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, key...)
			dst = append(dst, ':')
			var kept bool
			var err error
			dst, kept, err = p.value(dst, src[vs:ve], ci, ce, ck)
			if err != nil {
				return err
			}
			if !kept {
				dst = dst[:m]
				return nil
			}
			n++
			return nil
		})
		if err != nil {
			return dst[:mark], false, err
		}
		if n == 0 && !keepAll {
			return dst[:mark], false, nil
		}
		return append(dst, '}'), true, nil
	case '[':
		dst = append(dst, '[')
		n := 0
		_, err := EachElement(src, 0, func(idx, vs, ve int) error {
			ci, ce, excluded, ck := p.step(inc, exc, keepAll, Index(idx))
			if excluded || (!ck && ci.Empty()) {
				return nil
			}
			m := len(dst)
			if n > 0 {
				dst = append(dst, ',')
			}
			var kept bool
			var err error
			dst, kept, err = p.value(dst, src[vs:ve], ci, ce, ck)
			if err != nil {
				return err
			}
			if !kept {
				dst = dst[:m]
				return nil
			}
			n++
			return nil
		})
		if err != nil {
			return dst[:mark], false, err
		}
		if n == 0 && !keepAll {
			return dst[:mark], false, nil
		}
		return append(dst, ']'), true, nil
	}
	// A scalar: kept whole, or (include, nothing matched) not at all.
	if keepAll {
		return append(dst, src...), true, nil
	}
	return dst, false, nil
}

// Step moves the pruner's states past key: the next states, whether an
// exclude pattern ends at key, and whether what is below key is kept
// whole (no include, or an include pattern ended at key or above).
func (p *Pruner) Step(inc, exc State, keepAll bool, key string) (State, State, bool, bool) {
	return p.step(inc, exc, keepAll, key)
}
