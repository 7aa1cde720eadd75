package core_test

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/fluxstream/fluxstream/core"
)

// A damaged state file is reported at open, naming the file and what to
// do; never a panic (a crash loop under systemd) and never silence.
func TestDamagedStateDB(t *testing.T) {
	good := filepath.Join(t.TempDir(), "state.db")
	db, err := core.OpenStateDB(good)
	if err != nil {
		t.Fatal(err)
	}
	var puts []core.KVPut
	for i := range 2000 {
		puts = append(puts, core.KVPut{Key: []byte(fmt.Sprintf("job%06d", i)), Value: []byte(strings.Repeat("P", 100))})
	}
	if err := db.Node("flux").Commit(puts); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(good)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("state.db mode %v, want 0600", st.Mode().Perm())
	}
	data, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string][]byte{
		"garbage":   []byte("this is not a bbolt file, it is text that someone saved over it\n"),
		"truncated": data[:len(data)/3],
	}
	// Pages past the meta pages overwritten: the file opens, its tree does
	// not read.
	scribbled := append([]byte(nil), data...)
	for i := 4 * 4096; i < len(scribbled) && i < 12*4096; i++ {
		scribbled[i] = 0xa5
	}
	cases["scribbled"] = scribbled
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "state.db")
			if err := os.WriteFile(path, b, 0o600); err != nil {
				t.Fatal(err)
			}
			db, err := core.OpenStateDB(path)
			if err == nil {
				// Opened: then reading it must fail cleanly, not panic.
				kv := db.Node("flux")
				err = kv.ForEach(func(k, v []byte) error { return nil })
				db.Close()
			}
			if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "damaged") || !strings.Contains(err.Error(), "mv ") {
				t.Fatalf("error = %v", err)
			}
		})
	}
}

// A finished job costs a small constant in state.db: entries that shrink
// (a job's partial entry replaced by its 10-byte done entry) do not leave
// pages mostly empty, and ascending ids fill pages.
func TestStateDBFinishedJobsStaySmall(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	st, err := core.OpenStateDB(path)
	if err != nil {
		t.Fatal(err)
	}
	kv := st.Node("flux")
	const jobs, batch, active = 20000, 100, 500
	id := uint64(349066756096)
	partial, done := make([]byte, 200), make([]byte, 10)
	var running []uint64
	for range jobs / batch {
		var puts []core.KVPut
		for range batch {
			id += 1 << 24
			running = append(running, id)
			puts = append(puts, core.KVPut{Key: binary.BigEndian.AppendUint64(nil, id), Value: partial})
		}
		if len(running) > active {
			for _, old := range running[:batch] {
				puts = append(puts, core.KVPut{Key: binary.BigEndian.AppendUint64(nil, old), Value: done})
			}
			running = running[batch:]
		}
		if err := kv.Commit(puts); err != nil {
			t.Fatal(err)
		}
	}
	st.Close()
	db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.View(func(tx *bolt.Tx) error {
		s := tx.Bucket([]byte("node:flux")).Stats()
		perJob := float64(s.LeafAlloc+s.BranchAlloc-active*216) / (jobs - active)
		t.Logf("%d jobs (%d active): %d leaf pages, %.1f bytes of pages per finished job", jobs, active, s.LeafPageN, perJob)
		if perJob > 64 {
			t.Errorf("%.0f bytes of pages per finished job; want under 64 (18 of data)", perJob)
		}
		return nil
	})
}
