package jobstate

// A small validating JSON scanner. Journal payloads are parsed once per
// event on the hot path, so we walk the bytes instead of building values
// with reflection: skipping a value validates it, and object/array
// iterators hand out raw sub-slices of the input without copying.

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// maxDepth bounds nesting so hostile input cannot exhaust the stack.
const maxDepth = 512

// syntaxError is a JSON syntax error at a byte offset of the scanned input.
type syntaxError struct {
	off int
	msg string
}

func (e *syntaxError) Error() string { return fmt.Sprintf("invalid JSON at byte %d: %s", e.off, e.msg) }

func synErr(off int, msg string) error { return &syntaxError{off, msg} }

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func skipSpace(b []byte, i int) int {
	for i < len(b) && isSpace(b[i]) {
		i++
	}
	return i
}

// skipValue validates the value starting at b[i] (no leading space) and
// returns the offset just past it.
func skipValue(b []byte, i, depth int) (int, error) {
	if i >= len(b) {
		return i, synErr(i, "unexpected end of input")
	}
	switch c := b[i]; {
	case c == '"':
		end, _, err := skipString(b, i)
		return end, err
	case c == '{':
		return skipObject(b, i, depth+1)
	case c == '[':
		return skipArray(b, i, depth+1)
	case c == '-' || (c >= '0' && c <= '9'):
		end, _, err := skipNumber(b, i)
		return end, err
	case c == 't':
		return skipLiteral(b, i, "true")
	case c == 'f':
		return skipLiteral(b, i, "false")
	case c == 'n':
		return skipLiteral(b, i, "null")
	default:
		return i, synErr(i, fmt.Sprintf("unexpected character %q", c))
	}
}

func skipLiteral(b []byte, i int, lit string) (int, error) {
	if len(b)-i < len(lit) || string(b[i:i+len(lit)]) != lit {
		return i, synErr(i, "invalid literal")
	}
	return i + len(lit), nil
}

// skipString validates the string starting at the quote b[i]. It returns
// the offset past the closing quote and whether it holds escapes.
func skipString(b []byte, i int) (int, bool, error) {
	start := i
	i++
	esc := false
	for i < len(b) {
		c := b[i]
		switch {
		case c == '"':
			return i + 1, esc, nil
		case c == '\\':
			esc = true
			if i+1 >= len(b) {
				return i, esc, synErr(start, "unterminated string")
			}
			switch b[i+1] {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				i += 2
			case 'u':
				if len(b)-i < 6 {
					return i, esc, synErr(i, "short \\u escape")
				}
				for _, h := range b[i+2 : i+6] {
					if !isHex(h) {
						return i, esc, synErr(i, "bad \\u escape")
					}
				}
				i += 6
			default:
				return i, esc, synErr(i, "bad escape")
			}
		case c < 0x20:
			return i, esc, synErr(i, "control character in string")
		default:
			i++
		}
	}
	return i, esc, synErr(start, "unterminated string")
}

func isHex(c byte) bool {
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')
}

// skipNumber validates a JSON number; isInt says it has no fraction or
// exponent (what jansson calls an integer).
func skipNumber(b []byte, i int) (int, bool, error) {
	start := i
	if b[i] == '-' {
		i++
	}
	if i >= len(b) {
		return i, false, synErr(start, "bad number")
	}
	switch {
	case b[i] == '0':
		i++
	case b[i] >= '1' && b[i] <= '9':
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
	default:
		return i, false, synErr(start, "bad number")
	}
	isInt := true
	if i < len(b) && b[i] == '.' {
		isInt = false
		i++
		d := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == d {
			return i, false, synErr(start, "bad number")
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		isInt = false
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		d := i
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
		}
		if i == d {
			return i, false, synErr(start, "bad number")
		}
	}
	return i, isInt, nil
}

func skipObject(b []byte, i, depth int) (int, error) {
	if depth > maxDepth {
		return i, synErr(i, "nested too deeply")
	}
	it := objIter{b: b, i: i, depth: depth}
	if err := it.open(); err != nil {
		return i, err
	}
	for {
		_, _, ok, err := it.next()
		if err != nil {
			return it.i, err
		}
		if !ok {
			return it.i, nil
		}
	}
}

func skipArray(b []byte, i, depth int) (int, error) {
	if depth > maxDepth {
		return i, synErr(i, "nested too deeply")
	}
	it := arrIter{b: b, i: i, depth: depth}
	if err := it.open(); err != nil {
		return i, err
	}
	for {
		_, ok, err := it.next()
		if err != nil {
			return it.i, err
		}
		if !ok {
			return it.i, nil
		}
	}
}

// jstr is the content of a JSON string between its quotes.
type jstr struct {
	raw []byte
	esc bool // holds escapes: decode before use
}

// is reports whether the string equals s.
func (k jstr) is(s string) bool {
	if !k.esc {
		return string(k.raw) == s
	}
	return k.String() == s
}

func (k jstr) String() string {
	if !k.esc {
		return string(k.raw)
	}
	return unescape(k.raw)
}

// unescape decodes the content of a validated JSON string.
func unescape(raw []byte) string {
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			out = append(out, c)
			i++
			continue
		}
		switch raw[i+1] {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r := rune(hex4(raw[i+2 : i+6]))
			i += 6
			if utf16.IsSurrogate(r) {
				if i+6 <= len(raw) && raw[i] == '\\' && raw[i+1] == 'u' {
					r2 := rune(hex4(raw[i+2 : i+6]))
					if d := utf16.DecodeRune(r, r2); d != utf8.RuneError {
						out = utf8.AppendRune(out, d)
						i += 6
						continue
					}
				}
				r = utf8.RuneError
			}
			out = utf8.AppendRune(out, r)
			continue
		default: // '"', '\\', '/'
			out = append(out, raw[i+1])
		}
		i += 2
	}
	return string(out)
}

func hex4(h []byte) int {
	n := 0
	for _, c := range h {
		n <<= 4
		switch {
		case c >= '0' && c <= '9':
			n |= int(c - '0')
		case c >= 'a' && c <= 'f':
			n |= int(c-'a') + 10
		default:
			n |= int(c-'A') + 10
		}
	}
	return n
}

// skipTrusted returns the offset past the value at b[i] of input that was
// validated before: it only matches brackets and quotes. On invalid input
// it stops at the end of b rather than fail or panic.
func skipTrusted(b []byte, i int) int {
	if i >= len(b) {
		return len(b)
	}
	switch b[i] {
	case '"':
		return skipTrustedString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				i = skipTrustedString(b, i)
				continue
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return len(b)
	}
	for i < len(b) {
		switch b[i] {
		case ',', '}', ']', ' ', '\t', '\n', '\r':
			return i
		}
		i++
	}
	return i
}

func skipTrustedString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(b)
}

// objIter walks the members of the object at b[i]. A trusted iterator
// reads input validated before and skips values without checking them.
type objIter struct {
	b       []byte
	i       int
	depth   int
	n       int // members returned so far
	done    bool
	trusted bool
}

func (it *objIter) open() error {
	it.i = skipSpace(it.b, it.i)
	if it.i >= len(it.b) || it.b[it.i] != '{' {
		return errNotObject
	}
	it.i++
	return nil
}

var (
	errNotObject = errors.New("not an object")
	errNotArray  = errors.New("not an array")
)

// next returns the next member; ok is false after the closing brace.
func (it *objIter) next() (key jstr, val []byte, ok bool, err error) {
	if it.done {
		return key, nil, false, nil
	}
	b := it.b
	i := skipSpace(b, it.i)
	if i >= len(b) {
		return key, nil, false, synErr(i, "unterminated object")
	}
	if it.n == 0 {
		if b[i] == '}' {
			it.i, it.done = i+1, true
			return key, nil, false, nil
		}
	} else {
		switch b[i] {
		case '}':
			it.i, it.done = i+1, true
			return key, nil, false, nil
		case ',':
			i = skipSpace(b, i+1)
		default:
			return key, nil, false, synErr(i, "expected ',' or '}' in object")
		}
	}
	if i >= len(b) || b[i] != '"' {
		return key, nil, false, synErr(i, "expected a string key")
	}
	var end int
	var esc bool
	if it.trusted {
		end = skipTrustedString(b, i)
		esc = bytes.IndexByte(b[i:end], '\\') >= 0
	} else if end, esc, err = skipString(b, i); err != nil {
		return key, nil, false, err
	}
	if end-1 < i+1 {
		return key, nil, false, synErr(i, "unterminated string")
	}
	key = jstr{raw: b[i+1 : end-1], esc: esc}
	i = skipSpace(b, end)
	if i >= len(b) || b[i] != ':' {
		return key, nil, false, synErr(i, "expected ':' after key")
	}
	i = skipSpace(b, i+1)
	var vend int
	if it.trusted {
		vend = skipTrusted(b, i)
	} else if vend, err = skipValue(b, i, it.depth); err != nil {
		return key, nil, false, err
	}
	it.i = vend
	it.n++
	return key, b[i:vend], true, nil
}

// arrIter walks the elements of the array at b[i] (trusted: as objIter).
type arrIter struct {
	b       []byte
	i       int
	depth   int
	n       int
	done    bool
	trusted bool
}

func (it *arrIter) open() error {
	it.i = skipSpace(it.b, it.i)
	if it.i >= len(it.b) || it.b[it.i] != '[' {
		return errNotArray
	}
	it.i++
	return nil
}

func (it *arrIter) next() (val []byte, ok bool, err error) {
	if it.done {
		return nil, false, nil
	}
	b := it.b
	i := skipSpace(b, it.i)
	if i >= len(b) {
		return nil, false, synErr(i, "unterminated array")
	}
	if it.n == 0 {
		if b[i] == ']' {
			it.i, it.done = i+1, true
			return nil, false, nil
		}
	} else {
		switch b[i] {
		case ']':
			it.i, it.done = i+1, true
			return nil, false, nil
		case ',':
			i = skipSpace(b, i+1)
		default:
			return nil, false, synErr(i, "expected ',' or ']' in array")
		}
	}
	var end int
	if it.trusted {
		end = skipTrusted(b, i)
	} else if end, err = skipValue(b, i, it.depth); err != nil {
		return nil, false, err
	}
	if end <= i {
		return nil, false, synErr(i, "expected a value")
	}
	it.i = end
	it.n++
	return b[i:end], true, nil
}

// Typed readers of one raw value (already validated, no surrounding space).

func kindOf(v []byte) byte {
	if len(v) == 0 {
		return 0
	}
	switch c := v[0]; c {
	case '{', '[', '"', 't', 'f', 'n':
		return c
	}
	return '0' // number
}

func isNull(v []byte) bool { return len(v) == 4 && string(v) == "null" }

// asString decodes a JSON string value.
func asString(v []byte) (string, bool) {
	if len(v) < 2 || v[0] != '"' {
		return "", false
	}
	raw := v[1 : len(v)-1]
	for _, c := range raw {
		if c == '\\' {
			return unescape(raw), true
		}
	}
	return string(raw), true
}

// asInt decodes a JSON integer (no fraction or exponent, as jansson's
// json_is_integer) that fits in int64.
func asInt(v []byte) (int64, bool) {
	if len(v) == 0 {
		return 0, false
	}
	neg := v[0] == '-'
	d := v
	if neg {
		d = v[1:]
	}
	if len(d) == 0 || len(d) > 19 {
		return 0, false
	}
	var n uint64
	for _, c := range d {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
	}
	if neg {
		if n > 1<<63 {
			return 0, false
		}
		return -int64(n), true
	}
	if n > math.MaxInt64 {
		return 0, false
	}
	return int64(n), true
}

// asNumber decodes any JSON number (jansson's "F"). Like jansson it
// refuses a number too large for a double (JSON has no infinity).
func asNumber(v []byte) (float64, bool) {
	if kindOf(v) != '0' {
		return 0, false
	}
	if n, ok := asInt(v); ok && n > -(1<<53) && n < 1<<53 {
		return float64(n), true
	}
	f, err := strconv.ParseFloat(string(v), 64)
	if err != nil || math.IsInf(f, 0) {
		return 0, false
	}
	return f, true
}

// asBool decodes true or false.
func asBool(v []byte) (bool, bool) {
	switch string(v) {
	case "true":
		return true, true
	case "false":
		return false, true
	}
	return false, false
}

// fields collects the values of the named members of a validated object
// in one pass (the last duplicate wins, as in jansson). Missing members
// stay nil. It fails if obj is not an object.
func fields(obj []byte, names []string, out [][]byte) error {
	it := objIter{b: obj, trusted: true}
	if err := it.open(); err != nil {
		return err
	}
	for {
		k, v, ok, err := it.next()
		if err != nil {
			return err
		}
		if !ok {
			return nil
		}
		for n, name := range names {
			if k.is(name) {
				out[n] = v
				break
			}
		}
	}
}

// field returns the value of one member of an object (nil if absent).
func field(obj []byte, name string) ([]byte, error) {
	var out [1][]byte
	err := fields(obj, []string{name}, out[:])
	return out[0], err
}

// validJSON reports whether b is exactly one JSON value (with optional
// surrounding space).
func validJSON(b []byte) bool {
	i := skipSpace(b, 0)
	end, err := skipValue(b, i, 0)
	if err != nil {
		return false
	}
	return skipSpace(b, end) == len(b)
}

// appendQuoted appends s as a JSON string.
func appendQuoted(dst []byte, s string) []byte {
	const hexd = "0123456789abcdef"
	dst = append(dst, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			dst = append(dst, '\\', c)
		case c == '\n':
			dst = append(dst, '\\', 'n')
		case c == '\r':
			dst = append(dst, '\\', 'r')
		case c == '\t':
			dst = append(dst, '\\', 't')
		case c < 0x20:
			dst = append(dst, '\\', 'u', '0', '0', hexd[c>>4], hexd[c&0xf])
		default:
			dst = append(dst, c)
		}
	}
	return append(dst, '"')
}
