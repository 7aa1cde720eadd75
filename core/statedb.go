package core

import (
	"bytes"
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// StateDB is the process's durable state: one bbolt file in the data
// directory with a bucket per node. bbolt gives crash-safe transactions and
// an exclusive file lock, so two fluxstream processes can never share a
// data directory.
type StateDB struct {
	db   *bolt.DB
	path string
}

// OpenStateDB opens (or creates) the state file. It fails fast, naming the
// file, if another process holds it or it is damaged.
func OpenStateDB(path string) (_ *StateDB, err error) {
	defer recoverDamage(path, &err)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		if errors.Is(err, berrors.ErrTimeout) {
			return nil, fmt.Errorf("state %s is locked by another fluxstream process (one data_dir per process)", path)
		}
		return nil, damaged(path, err)
	}
	// bbolt checks little at open: walk the pages once, so a damaged file
	// is reported here and not as a crash later.
	if err := db.View(func(tx *bolt.Tx) error {
		for cerr := range tx.Check() {
			return cerr
		}
		return nil
	}); err != nil {
		db.Close()
		return nil, damaged(path, err)
	}
	return &StateDB{db: db, path: path}, nil
}

// damaged explains a state file that does not read.
func damaged(path string, err error) error {
	return fmt.Errorf("state %s is damaged (%v). To start over, move it aside (mv %s %s.damaged): "+
		"fluxstream then sends again every event Flux still has (duplicates, nothing lost); the spools are kept", path, err, path, path)
}

// recoverDamage turns a panic of bbolt on a damaged page into an error.
func recoverDamage(path string, err *error) {
	if p := recover(); p != nil {
		*err = damaged(path, fmt.Errorf("%v", p))
	}
}

// Close closes the file.
func (s *StateDB) Close() error { return s.db.Close() }

// Node returns the KV namespace of a node.
func (s *StateDB) Node(name string) KV {
	return &boltKV{db: s.db, path: s.path, bucket: []byte("node:" + name)}
}

type boltKV struct {
	db     *bolt.DB
	path   string
	bucket []byte
}

// String names the namespace for messages: "state.db bucket node:NAME".
func (kv *boltKV) String() string { return kv.path + " bucket " + string(kv.bucket) }

func (kv *boltKV) Get(key []byte) (_ []byte, err error) {
	defer recoverDamage(kv.path, &err)
	var out []byte
	err = kv.db.View(func(tx *bolt.Tx) error {
		if b := tx.Bucket(kv.bucket); b != nil {
			if v := b.Get(key); v != nil {
				out = bytes.Clone(v)
			}
		}
		return nil
	})
	return out, err
}

func (kv *boltKV) ForEach(fn func(k, v []byte) error) (err error) {
	defer recoverDamage(kv.path, &err)
	return kv.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(kv.bucket)
		if b == nil {
			return nil
		}
		return b.ForEach(fn)
	})
}

func (kv *boltKV) Commit(puts []KVPut) (err error) {
	defer recoverDamage(kv.path, &err)
	if len(puts) == 0 {
		return nil
	}
	return kv.db.Update(func(tx *bolt.Tx) error {
		b, err := tx.CreateBucketIfNotExists(kv.bucket)
		if err != nil {
			return err
		}
		// Keys (Flux job ids) grow with time: pages split at the end fill
		// up instead of being left half empty (bbolt's default 0.5).
		b.FillPercent = 0.95
		for _, p := range puts {
			switch old := b.Get(p.Key); {
			case p.Value == nil:
				err = b.Delete(p.Key)
			case len(p.Value) < len(old):
				// A job's entry shrinks when it finishes (a few hundred
				// bytes to 10). bbolt merges pages only after a delete:
				// without one, pages of finished jobs stay ~15% full and
				// the file grows by ~250 bytes per job instead of ~40.
				if err = b.Delete(p.Key); err == nil {
					err = b.Put(p.Key, p.Value)
				}
			default:
				err = b.Put(p.Key, p.Value)
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
}

// MemKV is an in-memory KV, for dry-run and tests.
type MemKV struct {
	mu sync.Mutex
	m  map[string][]byte
}

// NewMemKV returns an empty in-memory KV.
func NewMemKV() *MemKV { return &MemKV{m: map[string][]byte{}} }

func (kv *MemKV) Get(key []byte) ([]byte, error) {
	kv.mu.Lock()
	defer kv.mu.Unlock()
	return bytes.Clone(kv.m[string(key)]), nil
}

func (kv *MemKV) ForEach(fn func(k, v []byte) error) error {
	kv.mu.Lock()
	defer kv.mu.Unlock()
	for _, k := range sortedKeys(kv.m) {
		if err := fn([]byte(k), kv.m[k]); err != nil {
			return err
		}
	}
	return nil
}

func (kv *MemKV) Commit(puts []KVPut) error {
	kv.mu.Lock()
	defer kv.mu.Unlock()
	for _, p := range puts {
		if p.Value == nil {
			delete(kv.m, string(p.Key))
		} else {
			kv.m[string(p.Key)] = bytes.Clone(p.Value)
		}
	}
	return nil
}
