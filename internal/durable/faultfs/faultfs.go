// Package faultfs is a durable.FS for tests: it works on a real
// directory and keeps a model of what a power cut would leave of it, so a
// test can make fsync fail or lie, and Crash to see exactly what survives.
//
// The model, per file: its content as of its last successful Sync (or as
// found when the FS first met it). Per directory: its entries as of its
// last successful SyncDir. Crash rewrites the directory tree from that
// model: unsynced writes, truncations, creations, renames and removals are
// undone. That is the strict end of what POSIX allows (ext4 and xfs often
// keep more), which is what a durability test wants.
//
// After a failed Sync the bytes written since the last good one stay lost
// even if a later Sync succeeds: they come back as zeros, as after Linux
// drops pages whose writeback failed ("fsyncgate").
//
// Limits: every synced byte is also held in memory (meant for small test
// data); a rename across directories becomes durable in each directory
// with that directory's own SyncDir, so a crash may show the file under
// both names; real fsyncs are not issued (the model is the authority); and
// every path must lie under the root given to New. Files changed behind
// the FS's back after New are not seen (lookups adopt unknown paths as
// durable, as found).
package faultfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	"github.com/fluxstream/fluxstream/internal/durable"
)

// ErrInjected is the error of an injected Sync or SyncDir failure.
var ErrInjected = errors.New("faultfs: injected fsync failure")

// ErrCrashed is returned by a file opened before the last Crash.
var ErrCrashed = errors.New("faultfs: file handle from before Crash")

// Fault says what happens to a Sync or SyncDir that matches a rule.
type Fault int

const (
	// FailOnce makes the next matching sync fail; later ones work.
	FailOnce Fault = iota + 1
	// FailAlways makes every matching sync fail.
	FailAlways
	// Lie reports success and persists nothing.
	Lie
)

type rule struct {
	pattern string
	fault   Fault  // 0 for a hook
	hook    func() // runs (once) before the matching sync
}

// node is a file or directory, like an inode: renames move it.
type node struct {
	dir  bool
	perm fs.FileMode
	// Files.
	synced    []byte // content as of the last good Sync
	dirtyFrom int64  // lowest offset changed since; math.MaxInt64 = none
	poisoned  []span // written before a failed Sync: never reach the disk
	// Directories.
	live    map[string]*node
	durable map[string]*node // as of the last good SyncDir
}

type span struct{ from, to int64 }

// FS is a fault-injecting durable.FS rooted at a real directory.
type FS struct {
	root string

	mu    sync.Mutex
	top   *node
	rules []*rule
	calls map[string]int // sync calls by path relative to root
	gen   int            // bumped by Crash
	open  map[*file]struct{}
}

var _ durable.FS = (*FS)(nil)

// New takes root (which must exist) and everything under it as durable.
func New(root string) (*FS, error) {
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, err
	}
	top, err := snapshot(root)
	if err != nil {
		return nil, err
	}
	if !top.dir {
		return nil, fmt.Errorf("faultfs: %s is not a directory", root)
	}
	return &FS{root: root, top: top, calls: map[string]int{}, open: map[*file]struct{}{}}, nil
}

// snapshot reads path (recursively) as durable.
func snapshot(path string) (*node, error) {
	st, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	n := &node{perm: st.Mode().Perm(), dirtyFrom: math.MaxInt64}
	if !st.IsDir() {
		if n.synced, err = os.ReadFile(path); err != nil {
			return nil, err
		}
		return n, nil
	}
	n.dir = true
	n.live, n.durable = map[string]*node{}, map[string]*node{}
	ents, err := os.ReadDir(path)
	if err != nil {
		return nil, err
	}
	for _, e := range ents {
		c, err := snapshot(filepath.Join(path, e.Name()))
		if err != nil {
			return nil, err
		}
		n.live[e.Name()], n.durable[e.Name()] = c, c
	}
	return n, nil
}

// InjectSync adds a fault for Sync and SyncDir calls on paths matching
// pattern. A pattern with a slash matches the path relative to the root
// (filepath.Match); one without matches the base name ("*.seg", "cursor",
// "." for the root directory).
func (f *FS) InjectSync(pattern string, fault Fault) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = append(f.rules, &rule{pattern: pattern, fault: fault})
}

// BeforeSync runs hook once, at the start of the next Sync or SyncDir
// matching pattern, before anything is persisted, with no lock held (the
// hook may use the FS).
func (f *FS) BeforeSync(pattern string, hook func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = append(f.rules, &rule{pattern: pattern, hook: hook})
}

// ClearFaults removes every fault and hook.
func (f *FS) ClearFaults() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = nil
}

// SyncCalls counts the Sync and SyncDir calls so far on paths matching
// pattern, failed or not.
func (f *FS) SyncCalls(pattern string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for rel, c := range f.calls {
		if match(pattern, rel) {
			n += c
		}
	}
	return n
}

func match(pattern, rel string) bool {
	name := rel
	if !strings.Contains(pattern, "/") {
		name = filepath.Base(rel)
	}
	ok, _ := filepath.Match(pattern, name)
	return ok
}

// rel maps an OS path to one relative to the root, refusing others.
func (f *FS) rel(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	rel, err := filepath.Rel(f.root, abs)
	if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
		return "", fmt.Errorf("faultfs: %s is outside %s", path, f.root)
	}
	return rel, nil
}

// lookup finds the node at rel in the live tree, adopting what exists on
// disk but not in the model. nil without error: no such file.
func (f *FS) lookup(rel string) (*node, error) {
	n := f.top
	if rel == "." {
		return n, nil
	}
	p := ""
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		p = filepath.Join(p, part)
		if !n.dir {
			return nil, nil
		}
		c := n.live[part]
		if c == nil {
			var err error
			if c, err = snapshot(filepath.Join(f.root, p)); errors.Is(err, fs.ErrNotExist) {
				return nil, nil
			} else if err != nil {
				return nil, err
			}
			n.live[part], n.durable[part] = c, c
		}
		n = c
	}
	return n, nil
}

// parent is the live directory node holding rel, and rel's base name.
func (f *FS) parent(rel string) (*node, string, error) {
	d, err := f.lookup(filepath.Dir(rel))
	if err != nil {
		return nil, "", err
	}
	if d == nil || !d.dir {
		return nil, "", fmt.Errorf("faultfs: no directory for %s", rel)
	}
	return d, filepath.Base(rel), nil
}

// decide counts a sync call and picks its fault; it returns the hooks to
// run first. Called with f.mu held.
func (f *FS) decide(rel string) (Fault, []func()) {
	f.calls[rel]++
	var hooks []func()
	var fault Fault
	kept := f.rules[:0]
	for _, r := range f.rules {
		if !match(r.pattern, rel) {
			kept = append(kept, r)
			continue
		}
		switch {
		case r.hook != nil:
			hooks = append(hooks, r.hook)
			continue // once
		case fault == 0:
			fault = r.fault
			if r.fault == FailOnce {
				continue
			}
		}
		kept = append(kept, r)
	}
	f.rules = kept
	return fault, hooks
}

// syncRule runs the hooks of a sync on rel and returns its fault, with
// f.mu held on return.
func (f *FS) syncRule(rel string) Fault {
	f.mu.Lock()
	fault, hooks := f.decide(rel)
	if len(hooks) == 0 {
		return fault
	}
	f.mu.Unlock()
	for _, h := range hooks {
		h()
	}
	f.mu.Lock()
	return fault
}

// OpenFile opens name on disk and binds it to its model node.
func (f *FS) OpenFile(name string, flag int, perm fs.FileMode) (durable.File, error) {
	rel, err := f.rel(name)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	writable := flag&(os.O_WRONLY|os.O_RDWR) != 0
	osFlag := flag
	if writable {
		// Sync reads back what it persists, whatever the caller asked.
		osFlag = flag&^os.O_WRONLY | os.O_RDWR
	}
	// Look up before opening: a file the open creates is new, not one
	// to adopt as durable.
	n, err := f.lookup(rel)
	if err != nil {
		return nil, err
	}
	osf, err := os.OpenFile(name, osFlag, perm)
	if err != nil {
		return nil, err
	}
	if n == nil {
		d, base, err := f.parent(rel)
		if err != nil {
			osf.Close()
			return nil, err
		}
		st, err := osf.Stat()
		if err != nil {
			osf.Close()
			return nil, err
		}
		n = &node{perm: st.Mode().Perm(), dirtyFrom: 0}
		d.live[base] = n
	}
	if flag&os.O_TRUNC != 0 && writable {
		n.changed(0)
	}
	h := &file{fs: f, f: osf, n: n, rel: rel, gen: f.gen,
		append: flag&os.O_APPEND != 0, readable: flag&(os.O_WRONLY) == 0}
	f.open[h] = struct{}{}
	return h, nil
}

// changed notes a write or truncation at off.
func (n *node) changed(off int64) { n.dirtyFrom = min(n.dirtyFrom, off) }

// written notes bytes [off, off+k) written: they are no longer poisoned.
func (n *node) written(off, k int64) {
	n.changed(off)
	if len(n.poisoned) == 0 {
		return
	}
	var keep []span
	for _, s := range n.poisoned {
		if s.to <= off || s.from >= off+k {
			keep = append(keep, s)
			continue
		}
		if s.from < off {
			keep = append(keep, span{s.from, off})
		}
		if s.to > off+k {
			keep = append(keep, span{off + k, s.to})
		}
	}
	n.poisoned = keep
}

// Rename renames on disk and moves the node; durable after SyncDir of
// the target's directory.
func (f *FS) Rename(oldpath, newpath string) error {
	orel, err := f.rel(oldpath)
	if err != nil {
		return err
	}
	nrel, err := f.rel(newpath)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.lookup(orel)
	if err != nil {
		return err
	}
	if _, err := f.lookup(nrel); err != nil { // adopt a replaced target first
		return err
	}
	if err := os.Rename(oldpath, newpath); err != nil {
		return err
	}
	od, obase, err := f.parent(orel)
	if err != nil {
		return err
	}
	nd, nbase, err := f.parent(nrel)
	if err != nil {
		return err
	}
	delete(od.live, obase)
	nd.live[nbase] = n
	return nil
}

// Remove removes on disk; durable after SyncDir of its directory.
func (f *FS) Remove(name string) error {
	rel, err := f.rel(name)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.lookup(rel); err != nil {
		return err
	}
	if err := os.Remove(name); err != nil {
		return err
	}
	d, base, err := f.parent(rel)
	if err != nil {
		return err
	}
	delete(d.live, base)
	return nil
}

// ReadDir reads the real directory.
func (f *FS) ReadDir(name string) ([]fs.DirEntry, error) {
	if _, err := f.rel(name); err != nil {
		return nil, err
	}
	return os.ReadDir(name)
}

// Stat stats the real file.
func (f *FS) Stat(name string) (fs.FileInfo, error) {
	if _, err := f.rel(name); err != nil {
		return nil, err
	}
	return os.Stat(name)
}

// MkdirAll creates directories; each is durable after SyncDir of its
// parent.
func (f *FS) MkdirAll(path string, perm fs.FileMode) error {
	rel, err := f.rel(path)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, err := f.lookup(rel); err != nil { // adopt what exists already
		return err
	}
	if err := os.MkdirAll(path, perm); err != nil {
		return err
	}
	if rel == "." {
		return nil
	}
	d := f.top
	p := ""
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		p = filepath.Join(p, part)
		c := d.live[part]
		if c == nil {
			st, err := os.Stat(filepath.Join(f.root, p))
			if err != nil {
				return err
			}
			c = &node{dir: true, perm: st.Mode().Perm(), live: map[string]*node{}, durable: map[string]*node{}}
			d.live[part] = c
		}
		d = c
	}
	return nil
}

// Truncate truncates on disk; durable after a Sync of the file.
func (f *FS) Truncate(name string, size int64) error {
	rel, err := f.rel(name)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	n, err := f.lookup(rel)
	if err != nil {
		return err
	}
	if err := os.Truncate(name, size); err != nil {
		return err
	}
	if n != nil {
		n.changed(size)
	}
	return nil
}

// SyncDir makes the entries of dir durable, unless a fault says otherwise.
func (f *FS) SyncDir(dir string) error {
	rel, err := f.rel(dir)
	if err != nil {
		return err
	}
	fault := f.syncRule(rel)
	defer f.mu.Unlock()
	n, err := f.lookup(rel)
	if err != nil {
		return err
	}
	if n == nil || !n.dir {
		return &fs.PathError{Op: "fsync", Path: dir, Err: fs.ErrNotExist}
	}
	switch fault {
	case FailOnce, FailAlways:
		return &fs.PathError{Op: "fsync", Path: dir, Err: ErrInjected}
	case Lie:
		return nil
	}
	n.durable = make(map[string]*node, len(n.live))
	for k, v := range n.live {
		n.durable[k] = v
	}
	return nil
}

// Crash simulates a power cut: open files become unusable and the tree
// under the root is rewritten to its durable state. The FS stays usable,
// with everything now on disk counted as durable.
func (f *FS) Crash() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for h := range f.open {
		h.f.Close()
	}
	clear(f.open)
	f.gen++
	ents, err := os.ReadDir(f.root)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(f.root, e.Name())); err != nil {
			return err
		}
	}
	return materialize(f.root, f.top)
}

// materialize writes the durable children of directory d at path and
// resets the model to them.
func materialize(path string, d *node) error {
	names := make([]string, 0, len(d.durable))
	for name := range d.durable {
		names = append(names, name)
	}
	sort.Strings(names)
	d.live = map[string]*node{}
	for _, name := range names {
		c := d.durable[name]
		p := filepath.Join(path, name)
		d.live[name] = c
		if c.dir {
			if err := os.Mkdir(p, 0o700); err != nil {
				return err
			}
			if err := materialize(p, c); err != nil {
				return err
			}
		} else {
			if err := os.WriteFile(p, c.synced, 0o600); err != nil {
				return err
			}
			c.dirtyFrom, c.poisoned = math.MaxInt64, nil
		}
		if err := os.Chmod(p, c.perm); err != nil {
			return err
		}
	}
	return nil
}

// file is an open file of an FS.
type file struct {
	fs       *FS
	f        *os.File
	n        *node
	rel      string
	gen      int
	append   bool
	readable bool
}

var _ durable.File = (*file)(nil)

// live checks the handle survived no Crash; called with fs.mu held.
func (h *file) live() error {
	if h.gen != h.fs.gen {
		return &fs.PathError{Op: "use", Path: h.f.Name(), Err: ErrCrashed}
	}
	return nil
}

func (h *file) Name() string { return h.f.Name() }

func (h *file) Write(p []byte) (int, error) {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if err := h.live(); err != nil {
		return 0, err
	}
	var off int64
	var err error
	if h.append {
		var st fs.FileInfo
		if st, err = h.f.Stat(); err == nil {
			off = st.Size()
		}
	} else {
		off, err = h.f.Seek(0, io.SeekCurrent)
	}
	if err != nil {
		return 0, err
	}
	k, err := h.f.Write(p)
	h.n.written(off, int64(k))
	return k, err
}

func (h *file) Read(p []byte) (int, error) {
	if err := h.check(); err != nil {
		return 0, err
	}
	return h.f.Read(p)
}

func (h *file) ReadAt(p []byte, off int64) (int, error) {
	if err := h.check(); err != nil {
		return 0, err
	}
	return h.f.ReadAt(p, off)
}

// check refuses reads on a stale or write-only handle.
func (h *file) check() error {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if err := h.live(); err != nil {
		return err
	}
	if !h.readable {
		return &fs.PathError{Op: "read", Path: h.f.Name(), Err: errors.New("bad file descriptor")}
	}
	return nil
}

func (h *file) Seek(off int64, whence int) (int64, error) {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if err := h.live(); err != nil {
		return 0, err
	}
	return h.f.Seek(off, whence)
}

func (h *file) Stat() (fs.FileInfo, error) {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if err := h.live(); err != nil {
		return nil, err
	}
	return h.f.Stat()
}

func (h *file) Truncate(size int64) error {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if err := h.live(); err != nil {
		return err
	}
	if err := h.f.Truncate(size); err != nil {
		return err
	}
	h.n.changed(size)
	return nil
}

// Sync persists the file's content in the model (whoever wrote it, as
// fsync does for an inode), unless a fault says otherwise.
func (h *file) Sync() error {
	fault := h.fs.syncRule(h.rel)
	defer h.fs.mu.Unlock()
	if err := h.live(); err != nil {
		return err
	}
	n := h.n
	st, err := h.f.Stat()
	if err != nil {
		return err
	}
	size := st.Size()
	from := min(n.dirtyFrom, int64(len(n.synced)), size)
	switch fault {
	case FailOnce, FailAlways:
		// The kernel marks the pages clean anyway: what they held never
		// reaches the disk, and the next fsync does not retry them.
		// (Overwritten synced bytes keep their old content: n.synced.)
		if old := int64(len(n.synced)); old < size {
			n.poisoned = append(n.poisoned, span{old, size})
		}
		n.dirtyFrom = math.MaxInt64
		return &fs.PathError{Op: "fsync", Path: h.f.Name(), Err: ErrInjected}
	case Lie:
		return nil
	}
	tail := make([]byte, size-from)
	if _, err := h.f.ReadAt(tail, from); err != nil && err != io.EOF {
		return err
	}
	n.synced = append(n.synced[:from:from], tail...)
	for _, s := range n.poisoned {
		clear(n.synced[min(s.from, size):min(s.to, size)])
	}
	n.poisoned = nil
	n.dirtyFrom = math.MaxInt64
	return nil
}

func (h *file) Close() error {
	h.fs.mu.Lock()
	defer h.fs.mu.Unlock()
	if err := h.live(); err != nil {
		return err
	}
	delete(h.fs.open, h)
	return h.f.Close()
}
