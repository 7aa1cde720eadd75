package jobstate

// RFC 29 hostlists, decoded and encoded the way flux-core's libhostlist
// does (hostlist.c, hostrange.c, hostname.c, util.c), so that nodelist
// strings match what `flux jobs` prints: consecutive hosts that share a
// prefix and a compatible zero padding collapse into prefix[lo-hi,...].

import (
	"errors"
	"strconv"
	"strings"
)

const (
	maxHostRange  = 16384 // MAX_RANGE: hosts in one lo-hi range
	maxHostRanges = 10240 // MAX_RANGES: ranges between one pair of brackets
)

var errHostlist = errors.New("invalid hostlist")

type hostrange struct {
	prefix string
	lo, hi uint64
	width  int  // digits of the numeric suffix, with zero padding
	single bool // a host without a numeric suffix (prefix is the name)
}

func (h *hostrange) count() uint64 {
	if h.single {
		return 1
	}
	return h.hi - h.lo + 1
}

type hostlist struct{ hr []hostrange }

// sameKind is hostrange_prefix_cmp() == 0.
func sameKind(a, b *hostrange) bool { return a.prefix == b.prefix && a.single == b.single }

// withinRange says a and b print inside the same brackets.
func withinRange(a, b *hostrange) bool { return sameKind(a, b) && !a.single && !b.single }

func zeroPadded(num uint64, width int) int {
	n := 1
	for num /= 10; num > 0; num /= 10 {
		n++
	}
	if width > n {
		return width - n
	}
	return 0
}

// widthEquiv says whether ranges starting at n (width *wn) and m (width
// *wm) can share a zero padding, and if so makes the widths agree.
func widthEquiv(n uint64, wn *int, m uint64, wm *int) bool {
	npad, nmpad := zeroPadded(n, *wn), zeroPadded(n, *wm)
	mpad, mnpad := zeroPadded(m, *wm), zeroPadded(m, *wn)
	if npad != nmpad && mpad != mnpad {
		return false
	}
	if npad != nmpad {
		*wm = *wn
	} else {
		*wn = *wm
	}
	return true
}

// appendRange appends hr, extending the last range when hr continues it.
func (hl *hostlist) appendRange(hr hostrange) {
	if n := len(hl.hr); n > 0 {
		tail := &hl.hr[n-1]
		if sameKind(tail, &hr) && tail.hi == hr.lo-1 &&
			widthEquiv(tail.lo, &tail.width, hr.lo, &hr.width) {
			tail.hi = hr.hi
			return
		}
	}
	hl.hr = append(hl.hr, hr)
}

// appendHost appends one host name (hostlist_append_host).
func (hl *hostlist) appendHost(name string) {
	if name == "" || strings.ContainsAny(name, ",[]\t ") {
		return
	}
	end := len(name)
	for end > 0 && name[end-1] >= '0' && name[end-1] <= '9' {
		end--
	}
	if end == len(name) {
		hl.appendRange(hostrange{prefix: name, single: true})
		return
	}
	num, err := strconv.ParseUint(name[end:], 10, 64)
	if err != nil {
		return // libhostlist drops a host whose suffix overflows
	}
	hl.appendRange(hostrange{prefix: name[:end], lo: num, hi: num, width: len(name) - end})
}

// decodeHostlist parses "host,pfx[1-3,07],x[1-2]-ib" (hostlist_decode).
func decodeHostlist(s string) (*hostlist, error) {
	hl := &hostlist{}
	for _, tok := range hostTokens(s) {
		p := strings.IndexByte(tok, '[')
		if p < 0 {
			if strings.IndexByte(tok, ']') >= 0 {
				return nil, errHostlist
			}
			hl.appendHost(tok)
			continue
		}
		prefix := tok[:p]
		q := strings.IndexByte(tok[p+1:], ']')
		if q < 0 {
			return nil, errHostlist
		}
		inner, suffix := tok[p+1:p+1+q], tok[p+2+q:]
		ranges, err := parseHostRanges(inner)
		if err != nil {
			return nil, err
		}
		for _, r := range ranges {
			if suffix == "" {
				hl.appendRange(hostrange{prefix: prefix, lo: r.lo, hi: r.hi, width: r.width})
				continue
			}
			for j := r.lo; j <= r.hi; j++ {
				name := prefix + padNum(j, r.width) + suffix
				hl.appendRange(hostrange{prefix: name, single: true})
			}
		}
	}
	return hl, nil
}

// hostTokens splits on tab, comma and space outside brackets.
func hostTokens(s string) []string {
	var toks []string
	level, start := 0, -1
	for i := 0; i < len(s); i++ {
		c := s[i]
		sep := c == '\t' || c == ',' || c == ' '
		if start < 0 {
			if sep {
				continue
			}
			start = i
		}
		switch {
		case c == '[':
			level++
		case c == ']':
			level--
		case sep && level == 0:
			toks = append(toks, s[start:i])
			start = -1
		}
	}
	if start >= 0 {
		toks = append(toks, s[start:])
	}
	return toks
}

type hostNumRange struct {
	lo, hi uint64
	width  int
}

func parseHostRanges(s string) ([]hostNumRange, error) {
	parts := strings.Split(s, ",")
	if len(parts) > maxHostRanges {
		return nil, errHostlist
	}
	out := make([]hostNumRange, 0, len(parts))
	for _, part := range parts {
		lo, hi, dash := strings.Cut(part, "-")
		if dash && strings.HasPrefix(hi, "-") {
			return nil, errHostlist
		}
		l, err := parseDigits(lo)
		if err != nil {
			return nil, err
		}
		h := l
		if hi != "" {
			if h, err = parseDigits(hi); err != nil {
				return nil, err
			}
		}
		if l > h || h-l+1 > maxHostRange {
			return nil, errHostlist
		}
		out = append(out, hostNumRange{l, h, len(lo)})
	}
	return out, nil
}

func parseDigits(s string) (uint64, error) {
	if s == "" {
		return 0, errHostlist
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, errHostlist
		}
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, errHostlist
	}
	return n, nil
}

func padNum(n uint64, width int) string {
	s := strconv.FormatUint(n, 10)
	if len(s) < width {
		s = strings.Repeat("0", width-len(s)) + s
	}
	return s
}

// hosts lists the host names in order, at most limit of them.
func (hl *hostlist) hosts(limit int) []string {
	var out []string
	for i := range hl.hr {
		h := &hl.hr[i]
		if h.single {
			if len(out) >= limit {
				break
			}
			out = append(out, h.prefix)
			continue
		}
		for j := h.lo; len(out) < limit; j++ {
			out = append(out, h.prefix+padNum(j, h.width))
			if j == h.hi { // hi may be the largest uint64
				break
			}
		}
	}
	return out
}

// encode prints the list in ranged form (hostlist_encode).
func (hl *hostlist) encode() string {
	var b []byte
	hr := hl.hr
	for i := 0; i < len(hr); {
		if i > 0 {
			b = append(b, ',')
		}
		bracket := hr[i].count() > 1 || (i+1 < len(hr) && withinRange(&hr[i], &hr[i+1]))
		b = append(b, hr[i].prefix...)
		if bracket {
			b = append(b, '[')
		}
		for {
			if !hr[i].single {
				b = append(b, padNum(hr[i].lo, hr[i].width)...)
				if hr[i].lo < hr[i].hi {
					b = append(b, '-')
					b = append(b, padNum(hr[i].hi, hr[i].width)...)
				}
			}
			i++
			if i >= len(hr) || !withinRange(&hr[i], &hr[i-1]) {
				break
			}
			if bracket {
				b = append(b, ',')
			}
		}
		if bracket {
			b = append(b, ']')
		}
	}
	return string(b)
}
