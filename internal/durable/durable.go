// Package durable is the small file-system interface that fluxstream's
// durable writers (core/spool, sinks/file) go through, so tests can
// replace the disk with one that fails or lies about fsync, or loses
// what was never synced in a simulated power cut (package faultfs).
//
// It covers only what those writers need. OS is the real thing.
//
// The rules the writers follow, and why:
//   - File.Sync makes a file's data durable, not its name: a file that
//     was created, renamed or removed is durable under its new name only
//     once its directory is synced too (SyncDir). Without that, a power
//     cut can leave a fully fsynced file unreachable.
//   - A failed Sync is final for the bytes written since the last good
//     one: Linux may drop the dirty pages and report success to the next
//     fsync ("fsyncgate"), so retrying and then trusting the retry loses
//     data silently. Writers treat it as fatal.
package durable

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
)

// FS is what the durable writers need from a file system. Paths are
// ordinary OS paths.
type FS interface {
	OpenFile(name string, flag int, perm fs.FileMode) (File, error)
	Rename(oldpath, newpath string) error
	Remove(name string) error
	ReadDir(name string) ([]fs.DirEntry, error)
	MkdirAll(path string, perm fs.FileMode) error
	Stat(name string) (fs.FileInfo, error)
	Truncate(name string, size int64) error
	// SyncDir makes the entries of dir (files created, renamed into or
	// removed from it) durable.
	SyncDir(dir string) error
}

// File is an open file of an FS; *os.File implements it.
type File interface {
	io.Reader
	io.ReaderAt
	io.Writer
	io.Seeker
	io.Closer
	Name() string
	Stat() (fs.FileInfo, error)
	Sync() error
	Truncate(size int64) error
}

// OS is the real file system.
var OS FS = osFS{}

type osFS struct{}

func (osFS) OpenFile(name string, flag int, perm fs.FileMode) (File, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err // not a typed nil in the interface
	}
	return f, nil
}

func (osFS) Rename(oldpath, newpath string) error         { return os.Rename(oldpath, newpath) }
func (osFS) Remove(name string) error                     { return os.Remove(name) }
func (osFS) ReadDir(name string) ([]fs.DirEntry, error)   { return os.ReadDir(name) }
func (osFS) MkdirAll(path string, perm fs.FileMode) error { return os.MkdirAll(path, perm) }
func (osFS) Stat(name string) (fs.FileInfo, error)        { return os.Stat(name) }
func (osFS) Truncate(name string, size int64) error       { return os.Truncate(name, size) }

// SyncDir opens dir and fsyncs it: on Linux that commits its entries.
func (osFS) SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// MkdirAllSync is MkdirAll that also syncs the parent of every directory
// it created, so a directory made for durable files survives a crash
// along with them. Directories that already existed are left alone.
func MkdirAllSync(fsys FS, dir string, perm fs.FileMode) error {
	dir = filepath.Clean(dir)
	// The highest missing ancestor: everything from there down is new.
	top := ""
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := fsys.Stat(d); err == nil {
			break
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		top = d
		if filepath.Dir(d) == d {
			break
		}
	}
	if top == "" {
		return nil
	}
	if err := fsys.MkdirAll(dir, perm); err != nil {
		return err
	}
	// Sync from the deepest new directory up: each parent records its
	// child's entry.
	for d := dir; ; d = filepath.Dir(d) {
		if err := fsys.SyncDir(filepath.Dir(d)); err != nil {
			return err
		}
		if d == top {
			return nil
		}
	}
}
