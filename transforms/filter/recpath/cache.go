package recpath

import (
	"math/rand/v2"
	"sync/atomic"
	"unsafe"
)

// Cache remembers what a transform made of one of Flux's JSON objects, by
// the identity of its bytes: the records of a job share their jobspec, R
// and event contexts (the source never writes into them, it replaces
// them), so most lookups hit. An entry holds the source bytes, so their
// memory cannot be reused for other bytes while cached; the cache holds
// at most CacheEntries of them. Safe for concurrent use; a miss only
// costs the work again.
type Cache struct {
	sets [cacheSets][cacheWays]atomic.Pointer[cacheEntry]
}

// Set-associative, so that jobs whose bytes hash alike do not keep
// pushing each other out.
const (
	cacheSets = 1 << 10
	cacheWays = 4
	// CacheEntries bounds what a Cache holds.
	CacheEntries = cacheSets * cacheWays
)

type cacheEntry struct {
	src, out []byte
	tag      int
	name     string
	kept     bool
}

func (c *Cache) set(b []byte) *[cacheWays]atomic.Pointer[cacheEntry] {
	return &c.sets[AddrHash(unsafe.Pointer(unsafe.SliceData(b)), len(b))%cacheSets]
}

// AddrHash spreads an address and a length over 32 bits (Fibonacci
// hashing: allocations are aligned and evenly spaced, their low bits
// alike).
func AddrHash(p unsafe.Pointer, n int) uint64 {
	return (uint64(uintptr(p)) ^ uint64(n)<<48) * 0x9E3779B97F4A7C15 >> 32
}

// Get returns what Put stored for these very bytes under tag and name.
func (c *Cache) Get(src []byte, tag int, name string) (out []byte, kept, ok bool) {
	if len(src) == 0 {
		return nil, false, false
	}
	set := c.set(src)
	for w := range set {
		e := set[w].Load()
		if e != nil && len(e.src) == len(src) && unsafe.SliceData(e.src) == unsafe.SliceData(src) && e.tag == tag && e.name == name {
			return e.out, e.kept, true
		}
	}
	return nil, false, false
}

// Put stores the result for src: into a free way of its set, else over a
// random one (the records of many jobs interleave, and a cyclic walk over
// more of them than ways would miss every time under an oldest-first
// rule).
func (c *Cache) Put(src, out []byte, tag int, name string, kept bool) {
	if len(src) == 0 {
		return
	}
	e := &cacheEntry{src: src, out: out, tag: tag, name: name, kept: kept}
	set := c.set(src)
	for w := range set {
		if set[w].Load() == nil {
			set[w].Store(e)
			return
		}
	}
	set[rand.IntN(cacheWays)].Store(e)
}

// Reset empties the cache.
func (c *Cache) Reset() {
	for i := range c.sets {
		for w := range c.sets[i] {
			c.sets[i][w].Store(nil)
		}
	}
}
