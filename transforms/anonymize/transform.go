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
	"hash/maphash"
	"strconv"
	"strings"
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
	roots  [3]root      // jobspec, R, job.annotations
	ctx    root         // "context", before the event name
	js     root         // "jobspec", for jobspec-update keys
	cache  recpath.Cache
	logs   [logSlots]atomic.Pointer[cachedLog]
	memo   memo
	ids    [idSlots]atomic.Uint64 // uid<<32 | pseudonym; 0 empty
	macs   sync.Pool              // of hash.Hash
	keyed  bool
}

type strRule struct {
	field stringField
	r     *rule
	id    int // memo tag
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
		case stringFields[p].get != nil:
			t.strs = append(t.strs, strRule{field: stringFields[p], r: r, id: -1 - len(t.strs)})
		default:
			pats = append(pats, r.path)
			t.rules = append(t.rules, r)
		}
	}
	t.set, _ = recpath.Compile(pats) // Validate compiled them already
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
	t.macs = sync.Pool{New: func() any { return &macState{h: hmac.New(sha256.New, key)} }}
	t.cache.Reset()
	for i := range t.logs {
		t.logs[i].Store(nil)
	}
	t.memo.reset()
	for i := range t.ids {
		t.ids[i].Store(0)
	}
	t.keyed = true
}

// Domains keep a string and a number of the same text apart.
var (
	domainString = []byte{'s', 0}
	domainID     = []byte{'i', 0}
)

// mac is HMAC-SHA256(key, domain + s), on a pooled hash (Reset, not a
// new one: keying one costs two SHA-256 blocks).
func (t *Transform) mac(domain []byte, s string) (out [sha256.Size]byte) {
	m := t.macs.Get().(*macState)
	m.h.Reset()
	m.h.Write(domain)
	m.h.Write(unsafe.Slice(unsafe.StringData(s), len(s)))
	copy(out[:], m.h.Sum(m.sum[:0]))
	t.macs.Put(m)
	return out
}

// macState is a keyed hash with room for its sum, so Sum does not
// allocate.
type macState struct {
	h   hash.Hash
	sum [sha256.Size]byte
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
	if uid, ok := canonicalUID(text); ok {
		return t.pseudoUID(uid)
	}
	return t.pseudoID(text)
}

func (t *Transform) pseudoID(text string) uint32 {
	sum := t.mac(domainID, text)
	v := uint32(1)<<31 | binary.BigEndian.Uint32(sum[:4])>>1
	if v == UnknownUID {
		v--
	}
	return v
}

const idSlots = 1 << 8

// pseudoUID is PseudoID of a uid's decimal text, cached: a site has few
// users, and every record carries one.
func (t *Transform) pseudoUID(uid uint32) uint32 {
	slot := &t.ids[(uid*0x9E3779B1)>>24]
	if e := slot.Load(); e != 0 && uint32(e>>32) == uid {
		return uint32(e) // a pseudonym is never 0, so neither is an entry
	}
	var buf [10]byte
	v := t.pseudoID(keyString(strconv.AppendUint(buf[:0], uint64(uid), 10)))
	slot.Store(uint64(uid)<<32 | uint64(v))
	return v
}

// canonicalUID reads text as a uid when it is one's decimal form (no
// sign, no leading zero, below 2^32), so that the cache keyed by number
// gives what the text would.
func canonicalUID(text string) (uint32, bool) {
	if len(text) == 0 || len(text) > 10 || (text[0] == '0' && len(text) > 1) {
		return 0, false
	}
	var v uint64
	for i := 0; i < len(text); i++ {
		c := text[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		v = v*10 + uint64(c-'0')
	}
	if v > 1<<32-1 {
		return 0, false
	}
	return uint32(v), true
}

// memo caches what a rule made of a string: names, paths and commands
// repeat on every record of a job, and across jobs. It is a fixed table
// (a colliding value replaces the older one), so memory stays bounded
// however many distinct values come, and lookups take no lock.
type memo struct {
	seed  maphash.Seed
	slots [memoSlots]atomic.Pointer[memoEntry]
}

type memoEntry struct {
	tag  int // rule: index in Transform.rules, or -1-i for strs[i]
	k, v string
}

const memoSlots = 1 << 14

func (m *memo) reset() {
	m.seed = maphash.MakeSeed()
	for i := range m.slots {
		m.slots[i].Store(nil)
	}
}

func (m *memo) slot(tag int, k string) *atomic.Pointer[memoEntry] {
	h := maphash.String(m.seed, k) ^ uint64(tag)*0x9E3779B97F4A7C15
	return &m.slots[h&(memoSlots-1)]
}

// apply is a rule's action on one string; tag names the rule in the memo.
func (t *Transform) apply(r *rule, tag int, s string) string {
	if r.Action == Keep || s == "" {
		return s
	}
	slot := t.memo.slot(tag, s)
	if e := slot.Load(); e != nil && e.tag == tag && e.k == s {
		return e.v
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
	// Copied: s may point into a record's JSON bytes.
	k := strings.Clone(s)
	if out == s {
		out = k
	}
	slot.Store(&memoEntry{tag: tag, k: k, v: out})
	return out
}

// Process returns an anonymized copy of r. The copy is a Derive: what
// changes is replaced, what does not is shared with r.
func (t *Transform) Process(_ context.Context, r *core.Record) ([]*core.Record, error) {
	if !t.keyed {
		return nil, fmt.Errorf("anonymize: no key (the transform was not provisioned)")
	}
	c := r.Derive()
	// An encoder's bytes were made from the original: they go (place
	// encoders after anonymize).
	c.Encoded = nil
	for i := range t.strs {
		s := &t.strs[i]
		p := s.field.get(c) // read only: it may be shared with r
		if p == nil || *p == "" {
			continue
		}
		if v := t.apply(s.r, s.id, *p); v != *p {
			if s.field.own != nil {
				p = s.field.own(c)
			}
			*p = v
		}
	}
	if t.userid != nil && c.Job != nil && c.Job.UserID != UnknownUID {
		switch t.userid.Action {
		case Hash:
			c.Job.UserID = t.pseudoUID(c.Job.UserID)
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
		ctx, err := t.raw(c.Event.Context, partContext, c.Event.Name)
		if err != nil {
			return nil, fmt.Errorf("anonymize event.context of %s: %w", r.ID, err)
		}
		if !sameBytes(ctx, c.Event.Context) {
			c.OwnEvent().Context = ctx
		}
	}
	if len(c.Eventlog) > 0 {
		if c.Eventlog, err = t.eventlog(c.Eventlog); err != nil {
			return nil, fmt.Errorf("anonymize %w of %s", err, r.ID)
		}
	}
	return []*core.Record{c}, nil
}

// sameBytes reports whether a and b are the very same bytes.
func sameBytes(a, b []byte) bool {
	return len(a) == len(b) && unsafe.SliceData(a) == unsafe.SliceData(b)
}

// cachedLog is the anonymized form of a prefix of one eventlog array:
// the records of a job carry ever longer prefixes of one array (the source
// only appends to it), so each record adds its new entries to what the
// job's earlier records made, and a record's eventlog costs its new
// entries only.
type cachedLog struct {
	mu   sync.Mutex
	base *core.Event  // the source array
	out  []core.Event // base[:len(out)] anonymized; base itself while no entry changed
}

const logSlots = 1 << 12

// eventlog returns the anonymized form of log, or log itself when no
// rule changes it. The result may be shared by several records: it is
// read-only, as every part of an emitted record is.
func (t *Transform) eventlog(log []core.Event) ([]core.Event, error) {
	base := unsafe.SliceData(log)
	slot := &t.logs[recpath.AddrHash(unsafe.Pointer(base), 0)%logSlots]
	e := slot.Load()
	if e == nil || e.base != base {
		e = &cachedLog{base: base}
		slot.Store(e)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := len(e.out); i < len(log); i++ {
		ev := log[i]
		ctx, err := t.raw(ev.Context, partContext, ev.Name)
		if err != nil {
			return nil, fmt.Errorf("eventlog.%d.context (%s): %w", i, ev.Name, err)
		}
		aliased := len(e.out) == 0 || &e.out[0] == base
		switch {
		case sameBytes(ctx, ev.Context) && aliased:
			e.out = log[: i+1 : i+1]
			continue
		case aliased: // the first change: from here on a copy of its own
			out := make([]core.Event, i, cap(log))
			copy(out, log[:i])
			e.out = out
		}
		ev.Context = ctx
		// Past the length of every slice handed out: no record sees it.
		e.out = append(e.out, ev)
	}
	return e.out[:len(log):len(log)], nil
}

const (
	partJobspec = iota
	partR
	partAnnotations
	partContext
)

// raw anonymizes one of Flux's JSON objects, part (the cache's tag) and
// for contexts the event's name telling what applies. What it made of
// these very bytes before comes from the cache: the records of a job
// share their jobspec, R and contexts.
func (t *Transform) raw(src json.RawMessage, part int, name string) (json.RawMessage, error) {
	if len(src) == 0 {
		return src, nil
	}
	var start root
	if part == partContext {
		start = t.contextRoot(name)
	} else {
		start = t.roots[part]
	}
	jsUpdate := part == partContext && name == "jobspec-update"
	if start.idle() && !(jsUpdate && !t.js.idle()) {
		return src, nil
	}
	if out, _, ok := t.cache.Get(src, part, name); ok {
		return out, nil
	}
	if start.match < 0 && !jsUpdate && !t.set.Mentions(start.st, src) {
		return src, nil // no rule reaches into it
	}
	out, err := t.edit(src, start, jsUpdate)
	if err != nil {
		return nil, err
	}
	t.cache.Put(src, out, part, name, true)
	return out, nil
}

// contextRoot is where the walk starts in the context of an event name.
func (t *Transform) contextRoot(name string) root {
	st, m := t.set.Step(t.ctx.st, name)
	if m < 0 {
		m = t.ctx.match
	}
	return root{st: st, match: m}
}

func keyString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
