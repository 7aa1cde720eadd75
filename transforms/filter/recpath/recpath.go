// Package recpath matches dotted paths with `*` wildcards against the
// record's JSON form (schemas/record.md), and walks raw JSON bytes (jobspec,
// R, event contexts, annotations) without decoding them. The filter and
// anonymize transforms share it.
//
// A pattern is a dotted path; each segment is a key, an array index, or a
// glob where `*` stands for any run of characters (`*` alone: any one key
// or index; `t_*`: every key that starts with "t_"). A key that itself
// holds dots (jobspec-update contexts) is matched segment by segment.
//
// A set of patterns compiles into a small automaton: the state after a
// path prefix is a bit set of pattern positions, so a walk costs no
// allocation and a key is matched against all patterns at once.
package recpath

import (
	"bytes"
	"fmt"
	"math/bits"
	"strconv"
	"strings"
)

// MaxPositions bounds the total number of segments of a set's patterns.
const MaxPositions = 256

// Pattern is one parsed dotted path.
type Pattern struct {
	Text string
	Segs []string
}

// Literal reports whether the pattern has no wildcard.
func (p Pattern) Literal() bool { return !strings.Contains(p.Text, "*") }

// Wildcards counts the segments with a `*`.
func (p Pattern) Wildcards() int {
	n := 0
	for _, s := range p.Segs {
		if strings.Contains(s, "*") {
			n++
		}
	}
	return n
}

// Parse checks and splits a dotted path.
func Parse(text string) (Pattern, error) {
	if text == "" {
		return Pattern{}, fmt.Errorf("empty path")
	}
	segs := strings.Split(text, ".")
	for i, s := range segs {
		if s == "" {
			return Pattern{}, fmt.Errorf("path %q: empty segment %d (paths are dotted keys like job.username)", text, i+1)
		}
		if strings.Contains(s, "**") {
			return Pattern{}, fmt.Errorf("path %q: `**` is not supported; `*` stands for one key or index", text)
		}
	}
	return Pattern{Text: text, Segs: segs}, nil
}

// Glob reports whether key matches the segment pattern seg (`*` matches
// any run of characters, including none).
func Glob(seg, key string) bool {
	if seg == "*" {
		return true
	}
	star := strings.IndexByte(seg, '*')
	if star < 0 {
		return seg == key
	}
	// Prefix, then each `*`-separated piece in order, then the suffix.
	if !strings.HasPrefix(key, seg[:star]) {
		return false
	}
	key, seg = key[star:], seg[star+1:]
	for {
		star = strings.IndexByte(seg, '*')
		if star < 0 {
			return strings.HasSuffix(key, seg)
		}
		i := strings.Index(key, seg[:star])
		if i < 0 {
			return false
		}
		key, seg = key[i+star:], seg[star+1:]
	}
}

// State is where a walk stands: the pattern positions still alive.
type State [MaxPositions / 64]uint64

// Empty reports whether no pattern can match below here.
func (s *State) Empty() bool { return s[0]|s[1]|s[2]|s[3] == 0 }

func (s *State) set(i int)      { s[i>>6] |= 1 << (i & 63) }
func (s *State) has(i int) bool { return s[i>>6]&(1<<(i&63)) != 0 }

// Set is a compiled list of patterns.
type Set struct {
	Patterns []Pattern
	seg      []string   // position -> segment
	glob     []bool     // position -> the segment has a `*` (else: a plain key)
	pat      []int      // position -> pattern index
	last     []bool     // position is the pattern's last segment
	rank     []int      // pattern index -> precedence (lower wins)
	quoted   [][]byte   // position -> the segment as a JSON string, nil for a glob
	needs    [][][]byte // position -> quoted keys from there to the pattern's end
	start    State
}

// Compile builds the automaton of pats. When several patterns end at the
// same place, the one with fewer wildcards wins, then the longer, then
// the earlier in the list.
func Compile(pats []Pattern) (*Set, error) {
	s := &Set{Patterns: pats}
	for pi, p := range pats {
		if len(s.seg)+len(p.Segs) > MaxPositions {
			return nil, fmt.Errorf("too many path segments (at most %d over all paths)", MaxPositions)
		}
		s.start.set(len(s.seg))
		for i, seg := range p.Segs {
			s.seg = append(s.seg, seg)
			s.glob = append(s.glob, strings.Contains(seg, "*"))
			s.pat = append(s.pat, pi)
			s.last = append(s.last, i == len(p.Segs)-1)
			var q []byte
			if !strings.Contains(seg, "*") {
				q = []byte(strconv.Quote(seg))
			}
			s.quoted = append(s.quoted, q)
		}
		// What the rest of the pattern needs src to hold: every literal
		// key (not an index: that is no string in the JSON).
		for i := range p.Segs {
			var need [][]byte
			for _, seg := range p.Segs[i:] {
				if !strings.Contains(seg, "*") && !isIndex(seg) {
					need = append(need, []byte(strconv.Quote(seg)))
				}
			}
			s.needs = append(s.needs, need)
		}
	}
	s.rank = make([]int, len(pats))
	for i, p := range pats {
		r := 0
		for j, q := range pats {
			if j == i {
				continue
			}
			if better(q, j, p, i) {
				r++
			}
		}
		s.rank[i] = r
	}
	return s, nil
}

func better(q Pattern, qi int, p Pattern, pi int) bool {
	if q.Wildcards() != p.Wildcards() {
		return q.Wildcards() < p.Wildcards()
	}
	if len(q.Segs) != len(p.Segs) {
		return len(q.Segs) > len(p.Segs)
	}
	return qi < pi
}

// Start is the state at the record's root.
func (s *Set) Start() State {
	if s == nil {
		return State{}
	}
	return s.start
}

// Step moves past key. It returns the next state and the pattern that
// ends at key (the best by precedence), or -1.
func (s *Set) Step(st State, key string) (State, int) {
	var next State
	match := -1
	for w, word := range st {
		for word != 0 {
			b := bits.TrailingZeros64(word)
			word &= word - 1
			i := w<<6 | b
			if s.glob[i] {
				if !Glob(s.seg[i], key) {
					continue
				}
			} else if s.seg[i] != key {
				continue
			}
			if s.last[i] {
				if p := s.pat[i]; match < 0 || s.rank[p] < s.rank[match] {
					match = p
				}
			} else {
				next.set(i + 1)
			}
		}
	}
	return next, match
}

// StepPath steps through each dotted segment of key (a jobspec-update key
// such as "attributes.system.cwd"). The match is the last one found on
// the way, so a rule on a prefix covers what is below it.
func (s *Set) StepPath(st State, key string) (State, int) {
	match := -1
	for {
		seg, rest, more := strings.Cut(key, ".")
		var m int
		st, m = s.Step(st, seg)
		if m >= 0 {
			match = m
		}
		if !more {
			return st, match
		}
		key = rest
	}
}

// Rank is the precedence of pattern i (lower wins).
func (s *Set) Rank(i int) int { return s.rank[i] }

// Mentions reports whether raw JSON src may hold what a pattern alive at
// st goes on with: false when each of them names a key (below st, at any
// depth) that src does not hold as a string. It lets a walk skip JSON no
// rule can reach into (event contexts without a userid, sched
// annotations without user ones). JSON with escapes could spell a key
// otherwise, so it is always walked.
func (s *Set) Mentions(st State, src []byte) bool {
	if bytes.IndexByte(src, '\\') >= 0 {
		return true
	}
	for w, word := range st {
	next:
		for word != 0 {
			b := bits.TrailingZeros64(word)
			word &= word - 1
			for _, q := range s.needs[w<<6|b] {
				if !bytes.Contains(src, q) {
					continue next
				}
			}
			return true
		}
	}
	return false
}

// isIndex reports whether seg is an array index (digits).
func isIndex(seg string) bool {
	if seg == "" {
		return false
	}
	for i := 0; i < len(seg); i++ {
		if seg[i] < '0' || seg[i] > '9' {
			return false
		}
	}
	return true
}
