package faultfs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/fluxstream/fluxstream/internal/durable"
)

// tree lists everything under root: files as their content, directories
// as "/".
func tree(t *testing.T, root string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == root {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		if d.IsDir() {
			out[rel] = "/"
			return nil
		}
		b, err := os.ReadFile(p)
		out[rel] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// appendTo opens path for append (creating it) and writes s.
func appendTo(t *testing.T, f *FS, path, s string) durable.File {
	t.Helper()
	h, err := f.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	must(t, err)
	_, err = h.Write([]byte(s))
	must(t, err)
	return h
}

func TestCrash(t *testing.T) {
	tests := []struct {
		name    string
		initial map[string]string // on disk before New: durable
		do      func(t *testing.T, f *FS, root string)
		want    map[string]string // after Crash
	}{
		{
			name: "new file synced but its directory not: gone",
			do: func(t *testing.T, f *FS, root string) {
				must(t, appendTo(t, f, filepath.Join(root, "a"), "data").Sync())
			},
			want: map[string]string{},
		},
		{
			name: "directory synced but not the data: empty file",
			do: func(t *testing.T, f *FS, root string) {
				appendTo(t, f, filepath.Join(root, "a"), "data")
				must(t, f.SyncDir(root))
			},
			want: map[string]string{"a": ""},
		},
		{
			name: "data and directory synced: kept",
			do: func(t *testing.T, f *FS, root string) {
				must(t, appendTo(t, f, filepath.Join(root, "a"), "data").Sync())
				must(t, f.SyncDir(root))
			},
			want: map[string]string{"a": "data"},
		},
		{
			name:    "append after the last sync: cut back to the synced length",
			initial: map[string]string{"a": "old-"},
			do: func(t *testing.T, f *FS, root string) {
				h := appendTo(t, f, filepath.Join(root, "a"), "synced-")
				must(t, h.Sync())
				_, err := h.Write([]byte("lost"))
				must(t, err)
			},
			want: map[string]string{"a": "old-synced-"},
		},
		{
			name:    "a sync through another handle covers every write to the file",
			initial: map[string]string{"a": ""},
			do: func(t *testing.T, f *FS, root string) {
				appendTo(t, f, filepath.Join(root, "a"), "x")
				r, err := f.OpenFile(filepath.Join(root, "a"), os.O_RDONLY, 0)
				must(t, err)
				must(t, r.Sync())
			},
			want: map[string]string{"a": "x"},
		},
		{
			name:    "unsynced truncation comes undone",
			initial: map[string]string{"a": "0123456789"},
			do: func(t *testing.T, f *FS, root string) {
				must(t, f.Truncate(filepath.Join(root, "a"), 3))
				h, err := f.OpenFile(filepath.Join(root, "a"), os.O_WRONLY|os.O_TRUNC, 0)
				must(t, err)
				h.Write([]byte("new"))
			},
			want: map[string]string{"a": "0123456789"},
		},
		{
			name:    "synced truncation and overwrite stay",
			initial: map[string]string{"a": "0123456789"},
			do: func(t *testing.T, f *FS, root string) {
				h, err := f.OpenFile(filepath.Join(root, "a"), os.O_RDWR, 0)
				must(t, err)
				must(t, h.Truncate(6))
				_, err = h.Seek(2, 0)
				must(t, err)
				h.Write([]byte("ab"))
				must(t, h.Sync())
			},
			want: map[string]string{"a": "01ab45"},
		},
		{
			name:    "unsynced rename: the old name with its old content",
			initial: map[string]string{"cursor": "1", "cursor.tmp": "2"},
			do: func(t *testing.T, f *FS, root string) {
				must(t, f.Rename(filepath.Join(root, "cursor.tmp"), filepath.Join(root, "cursor")))
			},
			want: map[string]string{"cursor": "1", "cursor.tmp": "2"},
		},
		{
			name:    "synced rename replaces the target",
			initial: map[string]string{"cursor": "1", "cursor.tmp": "2"},
			do: func(t *testing.T, f *FS, root string) {
				must(t, f.Rename(filepath.Join(root, "cursor.tmp"), filepath.Join(root, "cursor")))
				must(t, f.SyncDir(root))
			},
			want: map[string]string{"cursor": "2"},
		},
		{
			name:    "unsynced remove comes back",
			initial: map[string]string{"a": "x", "b": "y"},
			do: func(t *testing.T, f *FS, root string) {
				must(t, f.Remove(filepath.Join(root, "a")))
				must(t, f.Remove(filepath.Join(root, "b")))
				must(t, f.SyncDir(filepath.Join(root)))
				appendTo(t, f, filepath.Join(root, "c"), "z") // after the SyncDir
			},
			want: map[string]string{},
		},
		{
			name: "a new directory needs its parent synced, its file needs it synced",
			do: func(t *testing.T, f *FS, root string) {
				must(t, durable.MkdirAllSync(f, filepath.Join(root, "x", "y"), 0o700))
				must(t, appendTo(t, f, filepath.Join(root, "x", "y", "kept"), "k").Sync())
				must(t, f.SyncDir(filepath.Join(root, "x", "y")))
				must(t, f.MkdirAll(filepath.Join(root, "z"), 0o700))
				must(t, appendTo(t, f, filepath.Join(root, "z", "lost"), "l").Sync())
				must(t, f.SyncDir(filepath.Join(root, "z")))
			},
			want: map[string]string{"x": "/", "x/y": "/", "x/y/kept": "k"},
		},
		{
			name:    "a failed fsync loses its bytes for good: a later good one writes zeros",
			initial: map[string]string{"a": "ok-"},
			do: func(t *testing.T, f *FS, root string) {
				f.InjectSync("a", FailOnce)
				h := appendTo(t, f, filepath.Join(root, "a"), "bad")
				if err := h.Sync(); !errors.Is(err, ErrInjected) {
					t.Fatalf("Sync = %v, want the injected failure", err)
				}
				h.Write([]byte("-new"))
				must(t, h.Sync())
			},
			want: map[string]string{"a": "ok-\x00\x00\x00-new"},
		},
		{
			name:    "after a failed fsync, cutting back to the synced length and writing again is clean",
			initial: map[string]string{"a": "ok-"},
			do: func(t *testing.T, f *FS, root string) {
				f.InjectSync("a", FailOnce)
				h := appendTo(t, f, filepath.Join(root, "a"), "bad-bytes")
				h.Sync()
				must(t, h.Truncate(3))
				h.Write([]byte("new"))
				must(t, h.Sync())
			},
			want: map[string]string{"a": "ok-new"},
		},
		{
			name:    "a lying fsync persists nothing",
			initial: map[string]string{"a": "ok-"},
			do: func(t *testing.T, f *FS, root string) {
				f.InjectSync("a", Lie)
				must(t, appendTo(t, f, filepath.Join(root, "a"), "lie").Sync())
			},
			want: map[string]string{"a": "ok-"},
		},
		{
			name: "a lying directory sync persists no entry",
			do: func(t *testing.T, f *FS, root string) {
				f.InjectSync(".", Lie)
				must(t, appendTo(t, f, filepath.Join(root, "a"), "x").Sync())
				must(t, f.SyncDir(root))
			},
			want: map[string]string{},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			for name, content := range tt.initial {
				must(t, os.WriteFile(filepath.Join(root, name), []byte(content), 0o600))
			}
			f, err := New(root)
			must(t, err)
			tt.do(t, f, root)
			must(t, f.Crash())
			if got := tree(t, root); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("after Crash:\n got %q\nwant %q", got, tt.want)
			}
			// What is on disk now is the durable state: syncing it all
			// and crashing again changes nothing.
			must(t, f.SyncDir(root))
			for name, content := range tt.want {
				if content == "/" {
					must(t, f.SyncDir(filepath.Join(root, name)))
				}
			}
			must(t, f.Crash())
			if got := tree(t, root); !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("after a second Crash: %q", got)
			}
		})
	}
}

func TestFaultRules(t *testing.T) {
	tests := []struct {
		pattern string
		fault   Fault
		path    string // relative to the root
		wantErr []bool // per Sync call
	}{
		{"*.seg", FailOnce, "s/0001.seg", []bool{true, false, false}},
		{"*.seg", FailAlways, "s/0001.seg", []bool{true, true, true}},
		{"*.seg", Lie, "s/0001.seg", []bool{false, false}},
		{"*.seg", FailAlways, "s/cursor", []bool{false, false}},
		{"s/*", FailOnce, "s/cursor", []bool{true, false}},
		{"t/*", FailOnce, "s/cursor", []bool{false}},
	}
	for _, tt := range tests {
		t.Run(tt.pattern+" "+tt.path, func(t *testing.T) {
			root := t.TempDir()
			f, err := New(root)
			must(t, err)
			must(t, f.MkdirAll(filepath.Join(root, "s"), 0o700))
			h := appendTo(t, f, filepath.Join(root, tt.path), "x")
			f.InjectSync(tt.pattern, tt.fault)
			for i, want := range tt.wantErr {
				err := h.Sync()
				if (err != nil) != want || (err != nil && !errors.Is(err, ErrInjected)) {
					t.Fatalf("Sync %d = %v, want failure %v", i, err, want)
				}
				if err != nil && !strings.Contains(err.Error(), tt.path) {
					t.Fatalf("error %q does not name the file", err)
				}
			}
			if got := f.SyncCalls(filepath.Base(tt.path)); got != len(tt.wantErr) {
				t.Fatalf("SyncCalls = %d, want %d", got, len(tt.wantErr))
			}
		})
	}
}

// A hook runs inside the next matching sync, before it persists, once.
func TestBeforeSync(t *testing.T) {
	root := t.TempDir()
	f, err := New(root)
	must(t, err)
	h := appendTo(t, f, filepath.Join(root, "a"), "before-")
	must(t, f.SyncDir(root))
	runs := 0
	f.BeforeSync("a", func() {
		runs++
		h.Write([]byte("during-")) // may use the FS: no lock held
	})
	must(t, h.Sync())
	must(t, h.Sync())
	if runs != 1 {
		t.Fatalf("hook ran %d times", runs)
	}
	h.Write([]byte("after"))
	must(t, f.Crash())
	if b, _ := os.ReadFile(filepath.Join(root, "a")); string(b) != "before-during-" {
		t.Fatalf("after crash %q", b)
	}
	if _, err := h.Write([]byte("x")); !errors.Is(err, ErrCrashed) {
		t.Fatalf("write on a handle from before the crash: %v", err)
	}
}

func TestPermsSurviveCrash(t *testing.T) {
	root := t.TempDir()
	f, err := New(root)
	must(t, err)
	must(t, durable.MkdirAllSync(f, filepath.Join(root, "d"), 0o700))
	h, err := f.OpenFile(filepath.Join(root, "d", "f"), os.O_WRONLY|os.O_CREATE, 0o600)
	must(t, err)
	must(t, h.Sync())
	must(t, f.SyncDir(filepath.Join(root, "d")))
	must(t, f.Crash())
	for name, want := range map[string]fs.FileMode{"d": 0o700, "d/f": 0o600} {
		st, err := os.Stat(filepath.Join(root, name))
		must(t, err)
		if st.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", name, st.Mode().Perm(), want)
		}
	}
}

func TestOutsideRootRefused(t *testing.T) {
	root := t.TempDir()
	f, err := New(filepath.Join(root))
	must(t, err)
	for _, p := range []string{filepath.Dir(root), filepath.Join(root, "..", "x")} {
		if _, err := f.OpenFile(p, os.O_RDONLY, 0); err == nil || !strings.Contains(err.Error(), "outside") {
			t.Errorf("OpenFile(%s) = %v", p, err)
		}
	}
}
