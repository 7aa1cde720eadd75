package recpath

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/fluxstream/fluxstream/core"
)

// The scanner below reads JSON that an encoder wrote (Flux, or our own):
// it checks structure as far as it walks, and reports malformed input
// instead of guessing.

// ErrSyntax is returned for malformed JSON.
var ErrSyntax = errors.New("malformed JSON")

func syntaxAt(i int) error { return fmt.Errorf("%w at byte %d", ErrSyntax, i) }

// SkipWS returns the index of the first non-space byte at or after i.
func SkipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// StringEnd returns the index just past the string starting at b[i]
// (a '"'), and whether it holds escapes.
func StringEnd(b []byte, i int) (int, bool, error) {
	// Most strings are short (keys, names): a plain loop beats a call.
	j := i + 1
	for n := min(len(b), j+16); j < n; j++ {
		switch b[j] {
		case '"':
			return j + 1, false, nil
		case '\\':
			return stringEndEscaped(b, i, j)
		}
	}
	return stringEndLong(b, i, j)
}

// stringEndLong goes on from b[j] with IndexByte.
func stringEndLong(b []byte, i, j int) (int, bool, error) {
	for j < len(b) {
		q := bytes.IndexByte(b[j:], '"')
		if q < 0 {
			break
		}
		if bs := bytes.IndexByte(b[j:j+q], '\\'); bs >= 0 {
			return stringEndEscaped(b, i, j+bs)
		}
		return j + q + 1, false, nil
	}
	return 0, false, syntaxAt(i)
}

// stringEndEscaped goes on from the escape at b[j].
func stringEndEscaped(b []byte, i, j int) (int, bool, error) {
	for j < len(b) {
		switch b[j] {
		case '"':
			return j + 1, true, nil
		case '\\':
			j += 2
		default:
			j++
		}
	}
	return 0, false, syntaxAt(i)
}

// structural marks the bytes a container's skip looks at.
var structural = [256]bool{'"': true, '{': true, '[': true, '}': true, ']': true}

// SkipValue returns the index just past the value starting at b[i].
func SkipValue(b []byte, i int) (int, error) {
	i = SkipWS(b, i)
	if i >= len(b) {
		return 0, syntaxAt(i)
	}
	switch c := b[i]; c {
	case '"':
		end, _, err := StringEnd(b, i)
		return end, err
	case '{', '[':
		depth := 0
		for j := i; j < len(b); j++ {
			if !structural[b[j]] {
				continue
			}
			switch b[j] {
			case '"':
				end, _, err := StringEnd(b, j)
				if err != nil {
					return 0, err
				}
				j = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, syntaxAt(i)
	default:
		j := i
		for j < len(b) {
			switch b[j] {
			case ',', '}', ']', ' ', '\t', '\n', '\r':
				if j == i {
					return 0, syntaxAt(i)
				}
				return j, nil
			}
			j++
		}
		if j == i {
			return 0, syntaxAt(i)
		}
		return j, nil
	}
}

// Unquote decodes a JSON string literal (quotes included).
func Unquote(raw []byte, escaped bool) (string, error) {
	if !escaped {
		return string(raw[1 : len(raw)-1]), nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", err
	}
	return s, nil
}

// AppendQuote appends s as a JSON string, escaping as encoding/json does
// with SetEscapeHTML(false) (invalid UTF-8 becomes U+FFFD): the record
// encoder's own quoting.
func AppendQuote(dst []byte, s string) []byte { return core.AppendJSONString(dst, s) }

// EachMember calls fn for each member of the object at b[i] ('{'), with the
// raw key (quotes included), whether it holds escapes, and the bounds of
// the value. It returns the index just past the object.
func EachMember(b []byte, i int, fn func(key []byte, escaped bool, vs, ve int) error) (int, error) {
	i = SkipWS(b, i)
	if i >= len(b) || b[i] != '{' {
		return 0, syntaxAt(i)
	}
	i = SkipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return i + 1, nil
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return 0, syntaxAt(i)
		}
		ke, esc, err := StringEnd(b, i)
		if err != nil {
			return 0, err
		}
		key := b[i:ke]
		i = SkipWS(b, ke)
		if i >= len(b) || b[i] != ':' {
			return 0, syntaxAt(i)
		}
		vs := SkipWS(b, i+1)
		ve, err := SkipValue(b, vs)
		if err != nil {
			return 0, err
		}
		if err := fn(key, esc, vs, ve); err != nil {
			return 0, err
		}
		i = SkipWS(b, ve)
		if i >= len(b) {
			return 0, syntaxAt(i)
		}
		switch b[i] {
		case ',':
			i = SkipWS(b, i+1)
		case '}':
			return i + 1, nil
		default:
			return 0, syntaxAt(i)
		}
	}
}

// EachElement calls fn for each element of the array at b[i] ('['), with its
// index and bounds. It returns the index just past the array.
func EachElement(b []byte, i int, fn func(idx, vs, ve int) error) (int, error) {
	i = SkipWS(b, i)
	if i >= len(b) || b[i] != '[' {
		return 0, syntaxAt(i)
	}
	i = SkipWS(b, i+1)
	if i < len(b) && b[i] == ']' {
		return i + 1, nil
	}
	for n := 0; ; n++ {
		ve, err := SkipValue(b, i)
		if err != nil {
			return 0, err
		}
		if err := fn(n, i, ve); err != nil {
			return 0, err
		}
		i = SkipWS(b, ve)
		if i >= len(b) {
			return 0, syntaxAt(i)
		}
		switch b[i] {
		case ',':
			i = SkipWS(b, i+1)
		case ']':
			return i + 1, nil
		default:
			return 0, syntaxAt(i)
		}
	}
}

// Index is the key of array element i ("0", "1", ...), without
// allocating for small indexes.
func Index(i int) string {
	if i < len(smallIndex) {
		return smallIndex[i]
	}
	return fmt.Sprint(i)
}

var smallIndex = func() []string {
	s := make([]string, 256)
	for i := range s {
		s[i] = fmt.Sprint(i)
	}
	return s
}()
