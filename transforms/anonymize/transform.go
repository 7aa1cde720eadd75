package anonymize

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"strconv"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/transforms/filter/recpath"
)

// Transform anonymizes records.
type Transform struct {
	cfg Config

	strs   []strRule    // typed string fields
	userid *rule        // job.userid
	set    *recpath.Set // rules on Flux's JSON, by full path
	rules  []*rule      // set's pattern i -> rule
	memos  []memo       // per rule: value -> pseudonym
	roots  [3]root      // jobspec, R, job.annotations
	ctx    root         // "context", before the event name
	js     root         // "jobspec", for jobspec-update keys
	cache  [cacheSlots]atomic.Pointer[cached]
	macs   sync.Pool // of hash.Hash
	keyed  bool
}

type strRule struct {
	field func(*core.Record) *string
	r     *rule
	memo  *memo
}

// root is the walk's start at one of Flux's JSON objects.
type root struct {
	st    recpath.State
	match int // rule that covers the whole object, -1 none
}

func (r root) idle() bool { return r.match < 0 && r.st.Empty() }

var (
	_ core.Transform   = (*Transform)(nil)
	_ core.Provisioner = (*Transform)(nil)
)

func (t *Transform) compile() {
	var pats []recpath.Pattern
	for i := range t.cfg.rules {
		r := &t.cfg.rules[i]
		switch p := r.path.Text; {
		case p == "job.userid":
			t.userid = r
		case stringFields[p] != nil:
			t.strs = append(t.strs, strRule{field: stringFields[p], r: r, memo: &memo{}})
		default:
			pats = append(pats, r.path)
			t.rules = append(t.rules, r)
		}
	}
	t.set, _ = recpath.Compile(pats) // Validate compiled them already
	t.memos = make([]memo, len(t.rules))
	start := t.set.Start()
	at := func(path ...string) root {
		st, m := start, -1
		for _, seg := range path {
			var mm int
			st, mm = t.set.Step(st, seg)
			if mm >= 0 {
				m = mm
			}
		}
		return root{st: st, match: m}
	}
	t.roots = [3]root{at("jobspec"), at("R"), at("job", "annotations")}
	t.ctx = at("context")
	t.js = t.roots[0]
}

// SetKey sets the HMAC key (Provision reads it from key_file or key_env).
func (t *Transform) SetKey(key []byte) {
	key = append([]byte(nil), key...)
	t.macs = sync.Pool{New: func() any { return hmac.New(sha256.New, key) }}
	for i := range t.cache {
		t.cache[i].Store(nil)
	}
	for i := range t.memos {
		t.memos[i].reset()
	}
	for _, s := range t.strs {
		s.memo.reset()
	}
	t.keyed = true
}

// Domains keep a string and a number of the same text apart.
var (
	domainString = []byte{'s', 0}
	domainID     = []byte{'i', 0}
)

func (t *Transform) mac(domain []byte, s string) [sha256.Size]byte {
	h := t.macs.Get().(hash.Hash)
	h.Reset()
	h.Write(domain)
	h.Write(unsafe.Slice(unsafe.StringData(s), len(s)))
	var out [sha256.Size]byte
	h.Sum(out[:0])
	t.macs.Put(h)
	return out
}

// Pseudonym is the keyed pseudonym of a string: prefix + length hex
// digits of HMAC-SHA256(key, "s\x00" + value).
func (t *Transform) Pseudonym(prefix string, length int, value string) string {
	sum := t.mac(domainString, value)
	var buf [2 * sha256.Size]byte
	hex.Encode(buf[:], sum[:])
	return prefix + string(buf[:length])
}

// UnknownUID is the contract's "no user known" userid.
const UnknownUID = 4294967295

// PseudoID maps a numeric id (its decimal text) to a pseudonymous one in
// [2^31, 2^32-2]: 2^31 + the top 31 bits of HMAC-SHA256(key, "i\x00" +
// text), 2^32-1 (UnknownUID) folded onto 2^32-2. Real uids stay below
// 2^31, so a pseudonym never looks like one.
func (t *Transform) PseudoID(text string) uint32 {
	sum := t.mac(domainID, text)
	v := uint32(1)<<31 | binary.BigEndian.Uint32(sum[:4])>>1
	if v == UnknownUID {
		v--
	}
	return v
}

// memo caches pseudonyms: names, paths and commands repeat on every
// record of a job, and across jobs.
type memo struct {
	m atomic.Pointer[sync.Map]
	n atomic.Int64
}

const memoMax = 1 << 16

func (m *memo) reset() { m.m.Store(new(sync.Map)); m.n.Store(0) }

func (m *memo) get(k string) (string, bool) {
	mm := m.m.Load()
	if mm == nil {
		return "", false
	}
	v, ok := mm.Load(k)
	if !ok {
		return "", false
	}
	return v.(string), true
}

func (m *memo) put(k, v string) {
	if m.n.Add(1) > memoMax {
		m.reset() // start over rather than grow without bound
	}
	if mm := m.m.Load(); mm != nil {
		mm.Store(k, v)
	}
}

// apply is a rule's action on one string.
func (t *Transform) apply(r *rule, m *memo, s string) string {
	if r.Action == Keep || s == "" {
		return s
	}
	if v, ok := m.get(s); ok {
		return v
	}
	var out string
	switch r.Action {
	case Hash:
		out = t.Pseudonym(r.Prefix, r.Length, s)
	case Drop:
		out = ""
	case Redact:
		if r.Replace != nil {
			out = r.re.ReplaceAllString(s, *r.Replace)
		} else {
			out = r.re.ReplaceAllStringFunc(s, func(match string) string { return t.Pseudonym(r.Prefix, r.Length, match) })
		}
	}
	m.put(s, out)
	return out
}

// Process returns an anonymized copy of r.
func (t *Transform) Process(_ context.Context, r *core.Record) ([]*core.Record, error) {
	if !t.keyed {
		return nil, fmt.Errorf("anonymize: no key (the transform was not provisioned)")
	}
	c := r.Clone()
	// An encoder's bytes were made from the original: they go (place
	// encoders after anonymize).
	c.Encoded = nil
	for _, s := range t.strs {
		if p := s.field(c); p != nil && *p != "" {
			*p = t.apply(s.r, s.memo, *p)
		}
	}
	if t.userid != nil && c.Job != nil && c.Job.UserID != UnknownUID {
		switch t.userid.Action {
		case Hash:
			c.Job.UserID = t.PseudoID(strconv.FormatUint(uint64(c.Job.UserID), 10))
		case Drop:
			c.Job.UserID = UnknownUID
		}
	}
	var err error
	if c.Jobspec, err = t.raw(c.Jobspec, partJobspec, ""); err != nil {
		return nil, fmt.Errorf("anonymize jobspec of %s: %w", r.ID, err)
	}
	if c.R, err = t.raw(c.R, partR, ""); err != nil {
		return nil, fmt.Errorf("anonymize R of %s: %w", r.ID, err)
	}
	if c.Job != nil {
		if c.Job.Annotations, err = t.raw(c.Job.Annotations, partAnnotations, ""); err != nil {
			return nil, fmt.Errorf("anonymize job.annotations of %s: %w", r.ID, err)
		}
	}
	if c.Event != nil {
		if c.Event.Context, err = t.raw(c.Event.Context, partContext, c.Event.Name); err != nil {
			return nil, fmt.Errorf("anonymize event.context of %s: %w", r.ID, err)
		}
	}
	for i := range c.Eventlog {
		e := &c.Eventlog[i]
		if e.Context, err = t.raw(e.Context, partContext, e.Name); err != nil {
			return nil, fmt.Errorf("anonymize eventlog.%d.context (%s) of %s: %w", i, e.Name, r.ID, err)
		}
	}
	return []*core.Record{c}, nil
}

const (
	partJobspec = iota
	partR
	partAnnotations
	partContext
)

// cached is the anonymized form of one JSON object, by identity: records
// of a job share their jobspec, R and event contexts (the reducer never
// writes into them), so most lookups hit. The entry holds src, so its
// memory cannot be reused for other bytes while cached.
type cached struct {
	src  []byte
	out  []byte
	part int
	name string
}

const cacheSlots = 1 << 12

func slot(b []byte) int {
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return int((p>>4)^(p>>16)^uintptr(len(b))) & (cacheSlots - 1)
}

func (t *Transform) raw(src json.RawMessage, part int, name string) (json.RawMessage, error) {
	if len(src) == 0 {
		return src, nil
	}
	var start root
	if part == partContext {
		st, m := t.set.Step(t.ctx.st, name)
		if m < 0 {
			m = t.ctx.match
		}
		start = root{st: st, match: m}
	} else {
		start = t.roots[part]
	}
	jsUpdate := part == partContext && name == "jobspec-update"
	if start.idle() && !(jsUpdate && !t.js.idle()) {
		return src, nil
	}
	if start.match < 0 && !jsUpdate && !t.set.Mentions(start.st, src) {
		return src, nil // no rule reaches into it
	}
	s := slot(src)
	if e := t.cache[s].Load(); e != nil && e.part == part && e.name == name && len(e.src) == len(src) &&
		unsafe.SliceData(e.src) == unsafe.SliceData(src) {
		return e.out, nil
	}
	var out []byte
	var err error
	if part == partContext && name == "jobspec-update" {
		out, err = t.jobspecUpdate(make([]byte, 0, len(src)+32), src, start)
	} else if start.match >= 0 && t.rules[start.match].Action == Drop {
		out = nil
	} else {
		i := recpath.SkipWS(src, 0)
		var end int
		if end, err = recpath.SkipValue(src, i); err == nil {
			out, _, err = t.rewrite(make([]byte, 0, len(src)+32), src[i:end], start.st, start.match)
		}
	}
	if err != nil {
		return nil, err
	}
	t.cache[s].Store(&cached{src: src, out: out, part: part, name: name})
	return out, nil
}

func keyString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }

// rewrite appends the anonymized form of the value src (exactly one
// value) under rule cur (-1: none yet). drop reports a value to remove.
func (t *Transform) rewrite(dst, src []byte, st recpath.State, cur int) (_ []byte, drop bool, err error) {
	if cur >= 0 && t.rules[cur].Action == Drop {
		return dst, true, nil
	}
	if st.Empty() && (cur < 0 || t.rules[cur].Action == Keep) {
		return append(dst, src...), false, nil
	}
	switch src[0] {
	case '{':
		dst = append(dst, '{')
		n := 0
		_, err = recpath.EachMember(src, 0, func(key []byte, escaped bool, vs, ve int) error {
			k := keyString(key[1 : len(key)-1])
			if escaped {
				s, err := recpath.Unquote(key, true)
				if err != nil {
					return err
				}
				k = s
			}
			next, m := t.set.Step(st, k)
			if m < 0 {
				m = cur
			}
			return t.member(&dst, &n, key, src[vs:ve], next, m)
		})
		return append(dst, '}'), false, err
	case '[':
		dst = append(dst, '[')
		n := 0
		_, err = recpath.EachElement(src, 0, func(idx, vs, ve int) error {
			next, m := t.set.Step(st, recpath.Index(idx))
			if m < 0 {
				m = cur
			}
			return t.member(&dst, &n, nil, src[vs:ve], next, m)
		})
		return append(dst, ']'), false, err
	case '"':
		if cur < 0 {
			return append(dst, src...), false, nil
		}
		s, err := recpath.Unquote(src, hasEscape(src))
		if err != nil {
			return dst, false, err
		}
		return recpath.AppendQuote(dst, t.apply(t.rules[cur], &t.memos[cur], s)), false, nil
	case 't', 'f', 'n':
		return append(dst, src...), false, nil
	}
	// A number: a pseudonymous integer under hash.
	if cur >= 0 && t.rules[cur].Action == Hash {
		return strconv.AppendUint(dst, uint64(t.PseudoID(keyString(src))), 10), false, nil
	}
	return append(dst, src...), false, nil
}

func hasEscape(s []byte) bool {
	for _, c := range s {
		if c == '\\' {
			return true
		}
	}
	return false
}

// member writes one object member (key != nil) or array element.
func (t *Transform) member(dst *[]byte, n *int, key, val []byte, st recpath.State, m int) error {
	mark := len(*dst)
	if *n > 0 {
		*dst = append(*dst, ',')
	}
	if key != nil {
		*dst = append(*dst, key...)
		*dst = append(*dst, ':')
	}
	out, drop, err := t.rewrite(*dst, val, st, m)
	if err != nil {
		return err
	}
	if drop {
		*dst = (*dst)[:mark]
		return nil
	}
	*dst = out
	*n++
	return nil
}

// jobspecUpdate rewrites a jobspec-update context: each key is a dotted
// jobspec path ("attributes.system.cwd") whose value follows the jobspec
// rules, and context.jobspec-update rules apply too.
func (t *Transform) jobspecUpdate(dst, src []byte, start root) ([]byte, error) {
	i := recpath.SkipWS(src, 0)
	if i >= len(src) || src[i] != '{' {
		out, _, err := t.rewrite(dst, src[i:], start.st, start.match)
		return out, err
	}
	dst = append(dst, '{')
	n := 0
	_, err := recpath.EachMember(src, i, func(key []byte, escaped bool, vs, ve int) error {
		k, err := recpath.Unquote(key, escaped)
		if err != nil {
			return err
		}
		n1, m1 := t.set.StepPath(t.js.st, k)
		if m1 < 0 {
			m1 = t.js.match
		}
		n2, m2 := t.set.Step(start.st, k)
		if m2 < 0 {
			m2 = start.match
		}
		m := m1
		if m < 0 || (m2 >= 0 && t.set.Rank(m2) < t.set.Rank(m1)) {
			m = m2
		}
		for w := range n1 {
			n1[w] |= n2[w]
		}
		return t.member(&dst, &n, key, src[vs:ve], n1, m)
	})
	return append(dst, '}'), err
}
