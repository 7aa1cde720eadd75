package recpath

// Edits builds an edited copy of JSON bytes in one pass: a walk in
// source order cuts spans out (putting what it wants in their place),
// and the bytes between cuts are copied through as they are. Without a
// cut the result is the source itself: no allocation, no copy.
type Edits struct {
	src  []byte
	out  []byte // nil until the first cut
	last int    // src[:last] is accounted for in out
}

// NewEdits starts edits of src.
func NewEdits(src []byte) Edits { return Edits{src: src} }

// Cut copies the source up to a and skips src[a:b]; what goes in its
// place is appended with Append (or AppendTo) next. Cuts come in source
// order and do not overlap.
func (e *Edits) Cut(a, b int) {
	if e.out == nil {
		e.out = make([]byte, 0, len(e.src)+64)
	}
	e.out = append(e.out, e.src[e.last:a]...)
	e.last = b
}

// Append writes b at the place of the last cut.
func (e *Edits) Append(b ...byte) { e.out = append(e.out, b...) }

// Out is the output so far, for append-style encoders
// (e.Set(strconv.AppendUint(e.Out(), ...))).
func (e *Edits) Out() []byte { return e.out }

// Set replaces the output (what an append to Out returned).
func (e *Edits) Set(out []byte) { e.out = out }

// Mark is a point to roll back to.
type Mark struct{ n, last int }

// Mark notes the edits' state.
func (e *Edits) Mark() Mark { return Mark{len(e.out), e.last} }

// Rollback undoes the cuts made since m.
func (e *Edits) Rollback(m Mark) {
	if e.out != nil {
		e.out = e.out[:m.n]
	}
	e.last = m.last
}

// Result is the edited bytes, or the source itself when nothing was cut.
func (e *Edits) Result() []byte {
	if e.out == nil {
		return e.src
	}
	return append(e.out, e.src[e.last:]...)
}
