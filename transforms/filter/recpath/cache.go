package recpath

import (
	"sync/atomic"
	"unsafe"
)

// Cache remembers what a transform made of one of Flux's JSON objects, by
// the identity of its bytes: the records of a job share their jobspec, R
// and event contexts (the source never writes into them, it replaces
// them), so most lookups hit. An entry holds the source bytes, so their
// memory cannot be reused for other bytes while cached. Safe for
// concurrent use; a miss only costs the work again.
type Cache struct {
	slots [cacheSlots]atomic.Pointer[cacheEntry]
}

const cacheSlots = 1 << 12

type cacheEntry struct {
	src, out []byte
	tag      int
	name     string
	kept     bool
}

func cacheSlot(b []byte) int {
	p := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	return int((p>>4)^(p>>16)^uintptr(len(b))) & (cacheSlots - 1)
}

// Get returns what Put stored for these very bytes under tag and name.
func (c *Cache) Get(src []byte, tag int, name string) (out []byte, kept, ok bool) {
	if len(src) == 0 {
		return nil, false, false
	}
	e := c.slots[cacheSlot(src)].Load()
	if e == nil || e.tag != tag || len(e.src) != len(src) || unsafe.SliceData(e.src) != unsafe.SliceData(src) || e.name != name {
		return nil, false, false
	}
	return e.out, e.kept, true
}

// Put stores the result for src.
func (c *Cache) Put(src, out []byte, tag int, name string, kept bool) {
	if len(src) == 0 {
		return
	}
	c.slots[cacheSlot(src)].Store(&cacheEntry{src: src, out: out, tag: tag, name: name, kept: kept})
}

// Reset empties the cache.
func (c *Cache) Reset() {
	for i := range c.slots {
		c.slots[i].Store(nil)
	}
}
