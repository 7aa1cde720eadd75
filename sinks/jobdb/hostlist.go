package jobdb

// RFC 29 hostlists, expanded to host names for the node table. The job
// state reducer (sources/flux/jobstate) has a full codec but keeps it
// unexported; this is the decoding half only.

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// maxHosts bounds one expansion: a damaged or hostile nodelist must not
// make the sink allocate without limit.
const maxHosts = 1 << 20

// ExpandHostlist returns the hosts of an RFC 29 hostlist in order:
// "node[1-3,7],login0" gives node1 node2 node3 node7 login0. A range keeps
// the zero padding of its low end ("n[08-10]" gives n08 n09 n10). Empty
// entries are skipped.
func ExpandHostlist(s string) ([]string, error) {
	var out []string
	for _, tok := range splitTop(s) {
		if tok == "" {
			continue
		}
		open := strings.IndexByte(tok, '[')
		if open < 0 {
			if strings.ContainsAny(tok, "]") {
				return nil, fmt.Errorf("hostlist %q: unmatched ]", s)
			}
			out = append(out, tok)
			continue
		}
		end := strings.IndexByte(tok[open:], ']')
		if end < 0 {
			return nil, fmt.Errorf("hostlist %q: unmatched [", s)
		}
		end += open
		prefix, inner, suffix := tok[:open], tok[open+1:end], tok[end+1:]
		if strings.ContainsAny(prefix, "]") || strings.ContainsAny(suffix, "[]") {
			return nil, fmt.Errorf("hostlist %q: nested or repeated brackets", s)
		}
		if inner == "" {
			return nil, fmt.Errorf("hostlist %q: empty brackets", s)
		}
		for _, r := range strings.Split(inner, ",") {
			lo, hi, width, err := parseRange(r)
			if err != nil {
				return nil, fmt.Errorf("hostlist %q: %w", s, err)
			}
			if uint64(len(out))+hi-lo+1 > maxHosts {
				return nil, fmt.Errorf("hostlist %q: more than %d hosts", s, maxHosts)
			}
			for n := lo; ; n++ {
				d := strconv.FormatUint(n, 10)
				if len(d) < width {
					d = strings.Repeat("0", width-len(d)) + d
				}
				out = append(out, prefix+d+suffix)
				if n == hi {
					break
				}
			}
		}
	}
	return out, nil
}

var errRange = errors.New("bad range")

// parseRange reads "7" or "08-10": bounds and the zero-padded width.
func parseRange(r string) (lo, hi uint64, width int, err error) {
	a, b, isRange := strings.Cut(r, "-")
	if !digits(a) || (isRange && !digits(b)) {
		return 0, 0, 0, fmt.Errorf("%w %q", errRange, r)
	}
	if lo, err = strconv.ParseUint(a, 10, 64); err != nil {
		return 0, 0, 0, fmt.Errorf("%w %q", errRange, r)
	}
	hi = lo
	if isRange {
		if hi, err = strconv.ParseUint(b, 10, 64); err != nil || hi < lo {
			return 0, 0, 0, fmt.Errorf("%w %q", errRange, r)
		}
	}
	if len(a) > 1 && a[0] == '0' {
		width = len(a)
	}
	return lo, hi, width, nil
}

func digits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// splitTop splits on the commas outside brackets.
func splitTop(s string) []string {
	var out []string
	depth, start := 0, 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '[':
			depth++
		case ']':
			depth--
		case ',':
			if depth == 0 {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}
