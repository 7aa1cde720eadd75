package file

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/fluxstream/fluxstream/core"
	"github.com/fluxstream/fluxstream/internal/durable/faultfs"
)

// recordIDs reads the ids of the records in a file as a crash left it: a
// gzip stream may lack its trailer.
func recordIDs(t *testing.T, path string) []string {
	t.Helper()
	if strings.HasSuffix(path, ".avro") {
		var ids []string
		for _, js := range readOCF(t, path) {
			ids = append(ids, idOf(t, js))
		}
		return ids
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var r io.Reader = f
	if strings.HasSuffix(path, ".gz") {
		zr, err := gzip.NewReader(f)
		if err != nil {
			t.Fatal(err)
		}
		r = zr
	}
	var ids []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		ids = append(ids, idOf(t, sc.Text()))
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatal(err)
	}
	return ids
}

func idOf(t *testing.T, line string) string {
	t.Helper()
	var m struct{ ID string }
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatalf("line %q: %v", line, err)
	}
	return m.ID
}

// idsUnder lists the record ids in every output file under dir, sorted
// and without duplicates (a retried batch may repeat lines).
func idsUnder(t *testing.T, dir string) []string {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "events*"))
	seen := map[string]bool{}
	var ids []string
	for _, f := range files {
		for _, id := range recordIDs(t, f) {
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
	}
	sort.Strings(ids)
	return ids
}

func idsOf(batches ...[]*core.Record) []string {
	var ids []string
	for _, b := range batches {
		for _, r := range b {
			ids = append(ids, r.ID)
		}
	}
	sort.Strings(ids)
	return ids
}

// With fsync: batch, a Write that returned nil survives a power cut:
// the data, the new file's name and its new directory (m6: no fsync of
// the file; nor of its directory). Through rotation too, and after a
// failed fsync the retried batch makes it.
func TestBatchSurvivesCrash(t *testing.T) {
	tests := []struct {
		name     string
		file     string
		config   string
		failSync bool // the first fsync of the file fails
	}{
		{"json", "events.jsonl", "", false},
		{"gzip", "events.jsonl.gz", "compression: gzip\n", false},
		{"avro", "events.avro", "format: avro\n", false},
		{"json rotated", "events.jsonl", "rotate: {max_bytes: 500}\n", false},
		{"avro rotated", "events.avro", "format: avro\nrotate: {max_bytes: 500}\n", false},
		{"json after a failed fsync", "events.jsonl", "", true},
		{"gzip after a failed fsync", "events.jsonl.gz", "compression: gzip\n", true},
		{"avro after a failed fsync", "events.avro", "format: avro\n", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			fsys, err := faultfs.New(root)
			if err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join(root, "out", "sub")
			s := newSink(t, "path: "+filepath.Join(dir, tt.file)+"\n"+tt.config)
			s.fs = fsys
			// A clock that stands still: rotations within one
			// millisecond must not replace each other's files.
			now := time.Date(2026, 11, 25, 7, 0, 0, 0, time.UTC)
			s.now = func() time.Time { return now }
			ctx := context.Background()
			var written [][]*core.Record
			for i := range 4 {
				batch := recs(i*3, 3)
				if tt.failSync && i == 1 {
					fsys.InjectSync("events*", faultfs.FailOnce)
					if err := s.Write(ctx, batch); err == nil || !errors.Is(err, faultfs.ErrInjected) || !strings.Contains(err.Error(), "fsync "+dir) {
						t.Fatalf("Write with a failing fsync = %v", err)
					}
				}
				if err := s.Write(ctx, batch); err != nil {
					t.Fatal(err)
				}
				written = append(written, batch)
			}
			s.Write(ctx, recs(100, 2)) // fails or not: no promise
			if err := fsys.Crash(); err != nil {
				t.Fatal(err)
			}
			got := idsUnder(t, dir)
			want := idsOf(written...)
			for _, id := range want {
				if i := sort.SearchStrings(got, id); i == len(got) || got[i] != id {
					t.Fatalf("record %s of an acknowledged batch lost in the crash; have %v", id, got)
				}
			}
		})
	}
}

func TestFilePermissions(t *testing.T) {
	root := t.TempDir()
	path := filepath.Join(root, "a", "b", "events.jsonl")
	s := newSink(t, "path: "+path)
	if err := s.Write(context.Background(), recs(0, 1)); err != nil {
		t.Fatal(err)
	}
	s.Close(context.Background())
	for p, want := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700, filepath.Join(root, "a"): 0o700} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s: %v, want %v", p, st.Mode().Perm(), want)
		}
	}
}
