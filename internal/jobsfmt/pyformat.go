package jobsfmt

// A subset of Python's str.format, enough for flux-core's OutputFormat:
// literal text with {{ }}, replacement fields {name!conv:spec}, and the
// format-spec mini-language [[fill]align][sign][#][0][width][,_][.prec][type]
// for strings, integers and floats, plus Flux's h and + suffixes.

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// piece is one (text, field, spec, conv) tuple of string.Formatter.parse.
type piece struct {
	text, field, spec, conv string
}

// parseFormat splits a format string as Python's Formatter.parse does.
func parseFormat(s string) ([]piece, error) {
	var out []piece
	var text strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '{':
			if i+1 < len(s) && s[i+1] == '{' {
				text.WriteByte('{')
				i++
				continue
			}
			// Find the matching close brace (specs may nest one level).
			depth, j := 1, i+1
			for ; j < len(s) && depth > 0; j++ {
				switch s[j] {
				case '{':
					depth++
				case '}':
					depth--
				}
			}
			if depth != 0 {
				return nil, fmt.Errorf("expected '}' before end of string")
			}
			body := s[i+1 : j-1]
			p := piece{text: text.String()}
			text.Reset()
			name, spec, hasSpec := cutField(body)
			if hasSpec {
				p.spec = spec
			}
			if k := strings.IndexByte(name, '!'); k >= 0 {
				p.conv = name[k+1:]
				name = name[:k]
				if len(p.conv) != 1 {
					return nil, fmt.Errorf("expected ':' after conversion specifier")
				}
			}
			if name == "" {
				return nil, fmt.Errorf("empty format field")
			}
			p.field = name
			out = append(out, p)
			i = j - 1
		case '}':
			if i+1 < len(s) && s[i+1] == '}' {
				text.WriteByte('}')
				i++
				continue
			}
			return nil, fmt.Errorf("single '}' encountered in format string")
		default:
			text.WriteByte(c)
		}
	}
	if text.Len() > 0 {
		out = append(out, piece{text: text.String()})
	}
	return out, nil
}

// cutField splits "name!c:spec" at the first ':' outside brackets.
func cutField(body string) (name, spec string, ok bool) {
	depth := 0
	for i := 0; i < len(body); i++ {
		switch body[i] {
		case '[':
			depth++
		case ']':
			depth--
		case ':':
			if depth == 0 {
				return body[:i], body[i+1:], true
			}
		}
	}
	return body, "", false
}

// kind of a value, as Python types it.
type kind int

const (
	kStr kind = iota // str ("" is JobInfo's unset default)
	kInt
	kFloat
	kBool
	kTime // UtilDatetime (a !d conversion); t == 0 is the epoch
)

// value is a Python value of a JobInfo attribute.
type value struct {
	k kind
	s string
	i int64
	f float64
	b bool
	// repr of an id: a JobID prints as f58 but formats with a spec as
	// an integer.
	strOverride string
}

func str(s string) value        { return value{k: kStr, s: s} }
func integer(i int64) value     { return value{k: kInt, i: i} }
func float(f float64) value     { return value{k: kFloat, f: f} }
func boolean(b bool) value      { return value{k: kBool, b: b} }
func timeValue(f float64) value { return value{k: kTime, f: f} }

// String is Python's str().
func (v value) String() string {
	if v.strOverride != "" {
		return v.strOverride
	}
	switch v.k {
	case kInt:
		return strconv.FormatInt(v.i, 10)
	case kFloat:
		return pyRepr(v.f)
	case kBool:
		if v.b {
			return "True"
		}
		return "False"
	}
	return v.s
}

// pyRepr is Python's repr() of a float.
func pyRepr(f float64) string {
	switch {
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	case math.IsNaN(f):
		return "nan"
	}
	if f == 0 {
		if math.Signbit(f) {
			return "-0.0"
		}
		return "0.0"
	}
	e := strconv.FormatFloat(f, 'e', -1, 64)
	exp, _ := strconv.Atoi(e[strings.IndexByte(e, 'e')+1:])
	if exp < -4 || exp >= 16 {
		mant, ex, _ := strings.Cut(e, "e")
		sign := ex[0]
		digits := strings.TrimLeft(ex[1:], "0")
		if len(digits) < 2 {
			digits = strings.Repeat("0", 2-len(digits)) + digits
		}
		return mant + "e" + string(sign) + digits
	}
	s := strconv.FormatFloat(f, 'f', -1, 64)
	if !strings.ContainsAny(s, ".") {
		s += ".0"
	}
	return s
}

// spec is a parsed format spec (FormatSpec in flux's util.py).
type spec struct {
	fill, align, sign, alt, zero string
	width, precision             string
	grouping, decimal, typ       string
	hyphen, truncate             string
}

// parseSpec splits a spec as flux's OutputFormat.FormatSpec does; a spec
// it cannot read gives an empty one (as FormatSpec does).
func parseSpec(s string) spec {
	var sp spec
	rs := []rune(s)
	i := 0
	isAlign := func(r rune) bool { return r == '<' || r == '>' || r == '=' || r == '^' }
	if len(rs) >= 2 && isAlign(rs[1]) {
		sp.fill, sp.align = string(rs[0]), string(rs[1])
		i = 2
	} else if len(rs) >= 1 && isAlign(rs[0]) {
		sp.align = string(rs[0])
		i = 1
	}
	rest := string(rs[i:])
	j := 0
	take := func(set string) string {
		if j < len(rest) && strings.IndexByte(set, rest[j]) >= 0 {
			j++
			return rest[j-1 : j]
		}
		return ""
	}
	sp.sign = take("-+ ")
	take("z")
	sp.alt = take("#")
	sp.zero = take("0")
	k := j
	for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
		j++
	}
	sp.width = rest[k:j]
	sp.grouping = take("_,")
	if j < len(rest) && rest[j] == '.' {
		sp.decimal = "."
		j++
		k = j
		for j < len(rest) && rest[j] >= '0' && rest[j] <= '9' {
			j++
		}
		sp.precision = rest[k:j]
	}
	sp.typ = take("bcdeEfFgGnosxX%")
	sp.hyphen = take("h")
	sp.truncate = take("+")
	if j != len(rest) {
		return spec{}
	}
	return sp
}

func (sp spec) String() string {
	return sp.fill + sp.align + sp.sign + sp.alt + sp.zero + sp.width + sp.grouping + sp.decimal + sp.precision + sp.typ + sp.hyphen + sp.truncate
}

// pad aligns s in width w (Python counts code points).
func pad(s string, w int, fill, align string, defAlign string) string {
	n := utf8.RuneCountInString(s)
	if w <= n {
		return s
	}
	if fill == "" {
		fill = " "
	}
	if align == "" {
		align = defAlign
	}
	gap := w - n
	switch align {
	case ">":
		return strings.Repeat(fill, gap) + s
	case "^":
		l := gap / 2
		return strings.Repeat(fill, l) + s + strings.Repeat(fill, gap-l)
	case "=":
		if len(s) > 0 && (s[0] == '-' || s[0] == '+' || s[0] == ' ') {
			return s[:1] + strings.Repeat(fill, gap) + s[1:]
		}
		return strings.Repeat(fill, gap) + s
	}
	return s + strings.Repeat(fill, gap)
}

// pyFormat is Python's format(value, spec) for the types JobInfo uses.
func pyFormat(v value, specStr string) (string, error) {
	if specStr == "" {
		return v.String(), nil
	}
	sp := parseSpec(specStr)
	if sp.String() != specStr {
		return "", fmt.Errorf("invalid format specifier %q", specStr)
	}
	width, _ := strconv.Atoi(sp.width)
	fill, align := sp.fill, sp.align
	if sp.zero != "" && fill == "" && align == "" {
		fill, align = "0", "="
	}
	switch v.k {
	case kStr, kTime:
		s := v.String()
		switch sp.typ {
		case "", "s":
		default:
			// An unset value ("") formatted with a numeric type: print
			// it empty, as flux's EmptyObject does.
			if s != "" {
				return "", fmt.Errorf("unknown format code %q for a string", sp.typ)
			}
		}
		if sp.decimal != "" {
			p, _ := strconv.Atoi(sp.precision)
			if utf8.RuneCountInString(s) > p {
				s = string([]rune(s)[:p])
			}
		}
		return pad(s, width, fill, align, "<"), nil
	case kBool, kInt:
		i := v.i
		if v.k == kBool {
			i = 0
			if v.b {
				i = 1
			}
		}
		switch sp.typ {
		case "", "d", "n":
			if sp.decimal != "" {
				return "", fmt.Errorf("precision not allowed in integer format specifier")
			}
			return pad(signed(strconv.FormatInt(abs(i), 10), i < 0, sp.sign, sp.grouping), width, fill, align, ">"), nil
		case "x", "X", "o", "b":
			base := map[string]int{"x": 16, "X": 16, "o": 8, "b": 2}[sp.typ]
			s := strconv.FormatInt(abs(i), base)
			if sp.typ == "X" {
				s = strings.ToUpper(s)
			}
			if sp.alt != "" {
				s = "0" + sp.typ + s
			}
			return pad(signed(s, i < 0, sp.sign, ""), width, fill, align, ">"), nil
		case "c", "s":
			return "", fmt.Errorf("unknown format code %q for an integer", sp.typ)
		}
		return formatFloat(float64(i), sp, width, fill, align)
	case kFloat:
		switch sp.typ {
		case "d", "x", "X", "o", "b", "c", "s":
			return "", fmt.Errorf("unknown format code %q for a float", sp.typ)
		}
		return formatFloat(v.f, sp, width, fill, align)
	}
	return v.String(), nil
}

func abs(i int64) int64 {
	if i < 0 {
		return -i
	}
	return i
}

func signed(digits string, neg bool, sign, grouping string) string {
	if grouping != "" {
		digits = group(digits, grouping)
	}
	switch {
	case neg:
		return "-" + digits
	case sign == "+":
		return "+" + digits
	case sign == " ":
		return " " + digits
	}
	return digits
}

func group(d, sep string) string {
	intPart, frac, hasFrac := strings.Cut(d, ".")
	var b strings.Builder
	for i, c := range intPart {
		if i > 0 && (len(intPart)-i)%3 == 0 {
			b.WriteString(sep)
		}
		b.WriteRune(c)
	}
	if hasFrac {
		return b.String() + "." + frac
	}
	return b.String()
}

func formatFloat(f float64, sp spec, width int, fill, align string) (string, error) {
	prec := -1
	if sp.decimal != "" {
		prec, _ = strconv.Atoi(sp.precision)
	}
	neg := f < 0 || (f == 0 && math.Signbit(f))
	a := math.Abs(f)
	var s string
	switch sp.typ {
	case "f", "F":
		if prec < 0 {
			prec = 6
		}
		s = strconv.FormatFloat(a, 'f', prec, 64)
	case "e", "E":
		if prec < 0 {
			prec = 6
		}
		s = pyExp(strconv.FormatFloat(a, 'e', prec, 64))
	case "%":
		if prec < 0 {
			prec = 6
		}
		s = strconv.FormatFloat(a*100, 'f', prec, 64) + "%"
	case "g", "G", "n":
		if prec < 0 {
			prec = 6
		}
		if prec == 0 {
			prec = 1
		}
		s = pyExp(fmt.Sprintf("%.*g", prec, a))
	default: // no type
		if prec < 0 {
			s = pyRepr(a)
		} else {
			if prec == 0 {
				prec = 1
			}
			s = pyExp(fmt.Sprintf("%.*g", prec, a))
			if !strings.ContainsAny(s, ".e") {
				s += ".0"
			}
		}
	}
	if sp.typ == "E" || sp.typ == "G" {
		s = strings.ToUpper(s)
	}
	return pad(signed(s, neg, sp.sign, sp.grouping), width, fill, align, ">"), nil
}

// pyExp writes an exponent with at least two digits, as C and Python do.
func pyExp(s string) string {
	i := strings.IndexByte(s, 'e')
	if i < 0 {
		return s
	}
	d := s[i+2:]
	if len(d) < 2 {
		d = "0" + d
	}
	return s[:i+2] + d
}
