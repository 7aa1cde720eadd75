package core_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
