package jobstate

// RFC 22 idsets, as flux-core's libidset decodes and encodes them
// (idset_decode.c, idset_encode.c): "0-3,7", optionally in brackets.

import (
	"fmt"
	"strconv"
	"strings"
)

// idRange is an inclusive range of ids.
type idRange struct{ lo, hi uint32 }

// idsetMaxUniverse mirrors IDSET_MAX_UNIVERSE (ids must stay below it).
const idsetMaxUniverse = 1 << 31

// decodeIdset parses an idset string into ascending, disjoint ranges.
// Like libidset it requires ascending elements, no leading zeros and
// hi > lo in a range; the empty string is the empty set.
func decodeIdset(s string) ([]idRange, error) {
	body := s
	if len(body) >= 2 && body[0] == '[' && body[len(body)-1] == ']' {
		body = body[1 : len(body)-1]
	}
	if strings.ContainsAny(body, "[]") {
		return nil, fmt.Errorf("idset %q: mismatched or nested brackets", s)
	}
	var out []idRange
	have := false
	var maxID uint32
	for rest := body; rest != ""; {
		var tok string
		tok, rest, _ = strings.Cut(rest, ",")
		if tok == "" {
			continue // strtok skips empty tokens
		}
		lo, hi, ok := parseIDRange(tok)
		if !ok {
			return nil, fmt.Errorf("idset %q: error parsing range %q", s, tok)
		}
		if have && lo <= maxID {
			return nil, fmt.Errorf("idset %q: range %q is out of order", s, tok)
		}
		if uint64(hi) >= idsetMaxUniverse {
			return nil, fmt.Errorf("idset %q: id too large", s)
		}
		if n := len(out); n > 0 && out[n-1].hi+1 == lo {
			out[n-1].hi = hi
		} else {
			out = append(out, idRange{lo, hi})
		}
		have, maxID = true, hi
	}
	return out, nil
}

func parseIDRange(tok string) (lo, hi uint32, ok bool) {
	a, b, isRange := strings.Cut(tok, "-")
	l, ok := parseID(a)
	if !ok {
		return 0, 0, false
	}
	if !isRange {
		return l, l, true
	}
	h, ok := parseID(b)
	if !ok || h <= l {
		return 0, 0, false
	}
	return l, h, true
}

func parseID(s string) (uint32, bool) {
	if s == "" || s[0] < '0' || s[0] > '9' || (s[0] == '0' && len(s) > 1) {
		return 0, false
	}
	n, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		return 0, false
	}
	return uint32(n), true
}

// idCount is the number of ids in ranges.
func idCount(rs []idRange) int {
	n := 0
	for _, r := range rs {
		n += int(r.hi-r.lo) + 1
	}
	return n
}

// unionIDs merges two ascending range lists.
func unionIDs(a, b []idRange) []idRange {
	if len(a) == 0 {
		return b
	}
	if len(b) == 0 {
		return a
	}
	out := make([]idRange, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) || j < len(b) {
		var r idRange
		if j >= len(b) || (i < len(a) && a[i].lo <= b[j].lo) {
			r, i = a[i], i+1
		} else {
			r, j = b[j], j+1
		}
		if n := len(out); n > 0 && uint64(r.lo) <= uint64(out[n-1].hi)+1 {
			if r.hi > out[n-1].hi {
				out[n-1].hi = r.hi
			}
			continue
		}
		out = append(out, r)
	}
	return out
}

// encodeIdset prints ascending ids as libidset does with
// IDSET_FLAG_BRACKETS|IDSET_FLAG_RANGE: "0", "[0-3]", "[0,2]", "".
func encodeIdset(ids []uint32) string {
	if len(ids) == 0 {
		return ""
	}
	b := make([]byte, 0, 16)
	if len(ids) > 1 {
		b = append(b, '[')
	}
	lo, hi := ids[0], ids[0]
	flush := func() {
		b = strconv.AppendUint(b, uint64(lo), 10)
		if hi != lo {
			b = append(b, '-')
			b = strconv.AppendUint(b, uint64(hi), 10)
		}
	}
	for _, id := range ids[1:] {
		if id == hi+1 {
			hi = id
			continue
		}
		flush()
		b = append(b, ',')
		lo, hi = id, id
	}
	flush()
	if len(ids) > 1 {
		b = append(b, ']')
	}
	return string(b)
}
