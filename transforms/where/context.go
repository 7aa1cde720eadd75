package where

import (
	"bytes"
	"encoding/json"
	"slices"
	"strconv"
	"unicode/utf8"
	"unsafe"

	"github.com/fluxstream/fluxstream/transforms/filter/recpath"
)

// fillContext sets e.Event.Context from the context's bytes: the whole
// of it decoded (keys nil), or only the members keys names, decoded into
// own (cleared first) as encoding/json would, the others skipped unread.
func (e *Env) fillContext(src []byte, keys []string, own map[string]any) error {
	if keys == nil {
		var m map[string]any
		if err := json.Unmarshal(src, &m); err != nil {
			return err
		}
		if m != nil {
			e.Event.Context = m
		}
		return nil
	}
	clear(own)
	e.Event.Context = own
	i := recpath.SkipWS(src, 0)
	if i < len(src) && src[i] != '{' {
		// null, or not an object: what encoding/json says of it.
		var m map[string]any
		return json.Unmarshal(src, &m)
	}
	if len(keys) == 0 {
		return nil
	}
	_, err := recpath.EachMember(src, i, func(key []byte, escaped bool, vs, ve int) error {
		k := unsafe.String(unsafe.SliceData(key[1:len(key)-1]), len(key)-2)
		if escaped {
			var err error
			if k, err = recpath.Unquote(key, true); err != nil {
				return err
			}
		}
		j, ok := slices.BinarySearch(keys, k)
		if !ok {
			return nil
		}
		v, err := decodeValue(src[vs:ve])
		if err != nil {
			return err
		}
		own[keys[j]] = v // a later duplicate wins, as in encoding/json
		return nil
	})
	return err
}

// decodeValue decodes one JSON value as encoding/json does into an any,
// without its reflection for the common scalars.
func decodeValue(b []byte) (any, error) {
	switch b[0] {
	case '"':
		if s := b[1 : len(b)-1]; bytes.IndexByte(s, '\\') < 0 && utf8.Valid(s) {
			return string(s), nil
		}
	case 't':
		if string(b) == "true" {
			return true, nil
		}
	case 'f':
		if string(b) == "false" {
			return false, nil
		}
	case 'n':
		if string(b) == "null" {
			return nil, nil
		}
	case '{', '[':
	default:
		if f, err := strconv.ParseFloat(unsafe.String(unsafe.SliceData(b), len(b)), 64); err == nil && validNumber(b) {
			return f, nil
		}
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, err
	}
	return v, nil
}

// validNumber reports whether b is a JSON number (ParseFloat also takes
// "+1", "0x10", "inf", "1_000" and more).
func validNumber(b []byte) bool {
	i := 0
	if b[0] == '-' {
		i++
	}
	digits := func() int {
		n := 0
		for i < len(b) && b[i] >= '0' && b[i] <= '9' {
			i++
			n++
		}
		return n
	}
	start := i
	n := digits()
	if n == 0 || (n > 1 && b[start] == '0') {
		return false
	}
	if i < len(b) && b[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		i++
		if i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	return i == len(b)
}
