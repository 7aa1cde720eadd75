// Package users turns the numeric userid of Flux events into user names
// through the system's user database, with a cache.
//
// Flux records only userids; sites keep names in NSS (LDAP, sssd, files).
// Go's pure os/user reads /etc/passwd alone, so by default we ask
// getent(1), which goes through NSS exactly as `flux jobs` does, without
// linking libc into fluxstream.
package users

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Modes of lookup.
const (
	ModeGetent = "getent" // NSS through getent(1); falls back to files if getent is missing
	ModeFiles  = "files"  // /etc/passwd only
	ModeNone   = "none"   // never resolve
)

// CheckMode returns an error naming the modes when mode is not one.
func CheckMode(mode string) error {
	switch mode {
	case ModeGetent, ModeFiles, ModeNone:
		return nil
	}
	return fmt.Errorf("unknown mode %q (getent, files, none)", mode)
}

// Resolver resolves and caches user names. Safe for concurrent use.
type Resolver struct {
	mode     string
	ttl      time.Duration // how long a found name is kept
	negTTL   time.Duration // how long "no such user" is kept
	mu       sync.Mutex
	cache    map[uint32]entry
	lookupFn func(uid uint32) (string, bool)
	now      func() time.Time
}

type entry struct {
	name    string
	found   bool
	expires time.Time
}

// New returns a resolver for the mode ("" means getent).
func New(mode string) *Resolver {
	r := &Resolver{mode: mode, ttl: time.Hour, negTTL: 5 * time.Minute, cache: map[uint32]entry{}, now: time.Now}
	switch mode {
	case ModeNone:
		r.lookupFn = func(uint32) (string, bool) { return "", false }
	case ModeFiles:
		r.lookupFn = lookupFiles
	default:
		r.mode = ModeGetent
		if _, err := exec.LookPath("getent"); err != nil {
			r.lookupFn = lookupFiles
		} else {
			r.lookupFn = lookupGetent
		}
	}
	return r
}

// Name returns the user name of uid, or "" if it has none.
func (r *Resolver) Name(uid uint32) string {
	if r == nil {
		return ""
	}
	now := r.now()
	r.mu.Lock()
	e, ok := r.cache[uid]
	r.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.name
	}
	name, found := r.lookupFn(uid)
	ttl := r.ttl
	if !found {
		ttl = r.negTTL
	}
	r.mu.Lock()
	r.cache[uid] = entry{name: name, found: found, expires: now.Add(ttl)}
	r.mu.Unlock()
	return name
}

func lookupFiles(uid uint32) (string, bool) {
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return "", false
	}
	return u.Username, true
}

// lookupGetent runs `getent passwd UID`; a slow directory service must
// not hold up the journal for long.
func lookupGetent(uid uint32) (string, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "getent", "passwd", strconv.FormatUint(uint64(uid), 10)).Output()
	if err != nil {
		return "", false
	}
	line, _, _ := bytes.Cut(out, []byte{'\n'})
	name, _, ok := strings.Cut(string(line), ":")
	if !ok || name == "" {
		return "", false
	}
	return name, true
}
